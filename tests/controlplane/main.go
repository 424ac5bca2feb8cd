// Command vx11-controlplane is a multi-call program holding a whole Kubernetes control plane
// and the Kubernetes parts of a node:
//
//	vx11-controlplane etcd --data-dir DIR --ready-file FILE
//	vx11-controlplane kube-apiserver [kube-apiserver flags]
//	vx11-controlplane kube-controller-manager [kube-controller-manager flags]
//	vx11-controlplane kube-scheduler [kube-scheduler flags]
//	vx11-controlplane kubelet [kubelet flags]
//	vx11-controlplane kube-proxy [kube-proxy flags]
//
// It also dispatches on the name it is called by, so a symlink named kube-apiserver works.
// Linking all of them into one program means one link step (the slow part of the build) and
// one cached file.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	_ "time/tzdata" // for CronJob time zones, as in the upstream mains

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format, as upstream
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as upstream
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric, as upstream
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

const usage = `usage: vx11-controlplane COMMAND [FLAGS]

commands:
  etcd                      embedded etcd (--data-dir, --ready-file; see "etcd --help")
  kube-apiserver            the Kubernetes API server
  kube-controller-manager   the Kubernetes controller manager
  kube-scheduler            the Kubernetes scheduler
  kubelet                   the Kubernetes node agent
  kube-proxy                the Kubernetes network proxy (Services)
`

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if !isCommand(name) {
		if len(args) == 0 || !isCommand(args[0]) {
			fmt.Fprint(os.Stderr, usage)
			os.Exit(2)
		}
		name, args = args[0], args[1:]
	}

	dieWithParent()

	switch name {
	case "etcd":
		os.Exit(runEtcd(args))
	case "kube-apiserver":
		command := apiserver.NewAPIServerCommand()
		command.SetArgs(args)
		os.Exit(cli.Run(command))
	case "kube-controller-manager":
		command := controllermanager.NewControllerManagerCommand()
		command.SetArgs(args)
		os.Exit(cli.Run(command))
	case "kube-scheduler":
		command := scheduler.NewSchedulerCommand()
		command.SetArgs(args)
		os.Exit(cli.Run(command))
	case "kubelet":
		command := kubelet.NewKubeletCommand(context.Background())
		command.SetArgs(args)
		os.Exit(cli.Run(command))
	case "kube-proxy":
		command := proxy.NewProxyCommand()
		command.SetArgs(args)
		os.Exit(cli.Run(command))
	}
}

func isCommand(name string) bool {
	switch name {
	case "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy":
		return true
	}
	return false
}
