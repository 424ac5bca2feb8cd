//go:build !linux

package main

// dieWithParent is Linux-only (prctl PR_SET_PDEATHSIG); elsewhere the starter's Drop is all.
func dieWithParent() {}
