package main

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// dieWithParent makes the kernel kill this process when the process that started it dies, so a
// test run that is killed (SIGKILL, a crash) leaves no API server or etcd behind. The starter
// opts in by passing its pid in VX11_PARENT_PID; the check against getppid closes the race in
// which the parent died before prctl ran.
func dieWithParent() {
	want, err := strconv.Atoi(os.Getenv("VX11_PARENT_PID"))
	if err != nil {
		return
	}
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return
	}
	if os.Getppid() != want {
		os.Exit(1)
	}
}
