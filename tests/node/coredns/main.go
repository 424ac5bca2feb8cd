// Command coredns is CoreDNS with only the plugins the test node needs: the kubernetes plugin
// answers for cluster.local (Services and pods), and nothing else is served. There is
// deliberately no forward (nor any other plugin that talks to an upstream resolver), so no DNS
// query can leave the machine: a name outside the cluster gets SERVFAIL/NXDOMAIN.
//
// Built by ../../controlplane/build.sh; "coredns -plugins" lists what is linked.
//
// The order in which plugins run is CoreDNS' own (dnsserver.Directives), whatever the order of
// the imports below. A Corefile must be given (-conf): CoreDNS' built-in default uses whoami,
// which is not linked.
package main

import (
	_ "github.com/coredns/coredns/core/dnsserver" // the "dns" server type
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	coremain.Run()
}
