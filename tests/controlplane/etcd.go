package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/storage/wal"
)

// runEtcd runs a single-member etcd for one control plane. Its listeners bind port 0 on
// loopback, so parallel control planes never race for ports; once etcd is ready it writes its
// client URL to --ready-file (atomically), where the starter reads it.
func runEtcd(args []string) int {
	flags := flag.NewFlagSet("etcd", flag.ContinueOnError)
	dataDir := flags.String("data-dir", "", "etcd data directory (required)")
	readyFile := flags.String("ready-file", "", "file to write the client URL to once ready (required)")
	clientURL := flags.String("listen-client-url", "http://127.0.0.1:0", "client URL to listen on (port 0: any free port)")
	// At "warn", etcd logs every health probe of the API server ("request stats").
	logLevel := flags.String("log-level", "error", "etcd log level: debug, info, warn, error")
	if err := flags.Parse(args); err != nil {
		return 2
	}
	if *dataDir == "" || *readyFile == "" {
		fmt.Fprintln(os.Stderr, "etcd: --data-dir and --ready-file are required")
		return 2
	}

	cfg := embed.NewConfig()
	cfg.Name = "vx11"
	cfg.Dir = *dataDir
	cfg.LogLevel = *logLevel
	// Tests throw the data away; fsync would only make every write wait for the disk.
	cfg.UnsafeNoFsync = true
	// Nobody uses etcd's JSON gateway; it would only dial the port-0 address and complain.
	cfg.EnableGRPCGateway = false
	// A test cluster writes a few MB: 4 MB WAL segments instead of 64 MB (two of which are
	// allocated up front) keep each control plane's directory small.
	wal.SegmentSizeBytes = 4 << 20
	client, err := url.Parse(*clientURL)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd: --listen-client-url: %v\n", err)
		return 2
	}
	peer, _ := url.Parse("http://127.0.0.1:0")
	cfg.ListenClientUrls = []url.URL{*client}
	cfg.AdvertiseClientUrls = []url.URL{*client}
	cfg.ListenPeerUrls = []url.URL{*peer}
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd: start: %v\n", err)
		return 1
	}
	defer e.Close()

	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		fmt.Fprintln(os.Stderr, "etcd: not ready after 60s")
		return 1
	}
	ready := "http://" + e.Clients[0].Addr().String()
	tmp := filepath.Join(filepath.Dir(*readyFile), "."+filepath.Base(*readyFile)+".tmp")
	if err := os.WriteFile(tmp, []byte(ready+"\n"), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "etcd: write ready file: %v\n", err)
		return 1
	}
	if err := os.Rename(tmp, *readyFile); err != nil {
		fmt.Fprintf(os.Stderr, "etcd: write ready file: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "etcd: ready, serving %s\n", ready)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	select {
	case sig := <-stop:
		fmt.Fprintf(os.Stderr, "etcd: %v, stopping\n", sig)
		return 0
	case err := <-e.Err():
		fmt.Fprintf(os.Stderr, "etcd: %v\n", err)
		return 1
	}
}
