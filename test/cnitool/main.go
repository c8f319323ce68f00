// cnitool-like libcni driver for the istio-cni end-to-end tests.
//
// Usage:
//
//	cnitool add|check|del <netname> <netns-path>
//	cnitool cached <netname> <netns-path>   # print libcni's cached ADD result (or "null")
//	cnitool validate <netname>              # VERSION-check every plugin of the list
//	cnitool version <plugin-type>           # print the plugin's VERSION answer
//
// Environment (same names as upstream cnitool, plus a few):
//
//	NETCONFPATH      dir of *.conflist files (default /etc/cni/net.d)
//	CNI_PATH         colon-separated plugin dirs
//	CNI_ARGS         "K1=V1;K2=V2"
//	CAP_ARGS         JSON object; keys become runtimeConfig entries for plugins
//	                 that list them in "capabilities"
//	CNI_IFNAME       default eth0
//	CNI_CONTAINERID  default: "cnitool-" + hex(sha512(abs netns path))[:20]
//	CNI_CACHE_DIR    libcni cache dir (default /var/lib/cni)
//
// add prints the result JSON on stdout. On error the libcni error text goes
// to stderr, followed (when the error is a CNI SPEC error) by one line
// "CNI_ERROR_JSON {...}" carrying code/msg/details; the exit code is 1.
//
// Build offline (Debian's golang-github-appc-cni-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=<dir> go build -o <out> test/cnitool/main.go
package main

import (
	"context"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

const defaultNetDir = "/etc/cni/net.d"

func usage() {
	fmt.Fprintf(os.Stderr, "usage: %s add|check|del|cached <netname> <netns-path>\n", filepath.Base(os.Args[0]))
	fmt.Fprintf(os.Stderr, "       %s validate <netname>\n", filepath.Base(os.Args[0]))
	fmt.Fprintf(os.Stderr, "       %s version <plugin-type>\n", filepath.Base(os.Args[0]))
	os.Exit(2)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err.Error())
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		b, jerr := json.Marshal(cniErr)
		if jerr == nil {
			fmt.Fprintf(os.Stderr, "CNI_ERROR_JSON %s\n", b)
		}
	}
	os.Exit(1)
}

func parseArgs(args string) ([][2]string, error) {
	var result [][2]string
	for _, pair := range strings.Split(args, ";") {
		if pair == "" {
			continue
		}
		kv := strings.SplitN(pair, "=", 2)
		if len(kv) != 2 || kv[0] == "" {
			return nil, fmt.Errorf("invalid CNI_ARGS pair %q", pair)
		}
		result = append(result, [2]string{kv[0], kv[1]})
	}
	return result, nil
}

func printJSON(v interface{}) {
	b, err := json.MarshalIndent(v, "", "    ")
	if err != nil {
		fail(err)
	}
	fmt.Println(string(b))
}

func main() {
	if len(os.Args) < 3 {
		usage()
	}
	cmd := os.Args[1]

	netdir := os.Getenv("NETCONFPATH")
	if netdir == "" {
		netdir = defaultNetDir
	}
	cachedir := os.Getenv("CNI_CACHE_DIR")
	cniPath := filepath.SplitList(os.Getenv("CNI_PATH"))

	var capArgs map[string]interface{}
	if v := os.Getenv("CAP_ARGS"); v != "" {
		if err := json.Unmarshal([]byte(v), &capArgs); err != nil {
			fail(fmt.Errorf("CAP_ARGS: %w", err))
		}
	}
	var cniArgs [][2]string
	if v := os.Getenv("CNI_ARGS"); v != "" {
		var err error
		if cniArgs, err = parseArgs(v); err != nil {
			fail(err)
		}
	}
	ifName, ok := os.LookupEnv("CNI_IFNAME")
	if !ok || ifName == "" {
		ifName = "eth0"
	}
	containerID := os.Getenv("CNI_CONTAINERID")

	// libcni hands the plugin our whole environment (plus the CNI_* vars it
	// sets itself). Drop the driver-only variables so the plugin sees what it
	// would see under a real runtime.
	for _, k := range []string{"NETCONFPATH", "CAP_ARGS", "CNI_CACHE_DIR"} {
		os.Unsetenv(k)
	}

	cninet := libcni.NewCNIConfigWithCacheDir(cniPath, cachedir, nil)
	ctx := context.Background()

	switch cmd {
	case "version":
		info, err := cninet.GetVersionInfo(ctx, os.Args[2])
		if err != nil {
			fail(err)
		}
		printJSON(info)
		return
	case "validate":
		netconf, err := libcni.LoadConfList(netdir, os.Args[2])
		if err != nil {
			fail(err)
		}
		caps, err := cninet.ValidateNetworkList(ctx, netconf)
		if err != nil {
			fail(err)
		}
		printJSON(map[string]interface{}{"capabilities": caps})
		return
	case "add", "check", "del", "cached":
	default:
		usage()
	}

	if len(os.Args) < 4 {
		usage()
	}
	netconf, err := libcni.LoadConfList(netdir, os.Args[2])
	if err != nil {
		fail(err)
	}
	netns := os.Args[3]
	if netns != "" {
		if netns, err = filepath.Abs(netns); err != nil {
			fail(err)
		}
	}
	if containerID == "" {
		if netns == "" {
			fail(fmt.Errorf("an empty netns path needs CNI_CONTAINERID"))
		}
		s := sha512.Sum512([]byte(netns))
		containerID = fmt.Sprintf("cnitool-%x", s[:10])
	}

	rt := &libcni.RuntimeConf{
		ContainerID:    containerID,
		NetNS:          netns,
		IfName:         ifName,
		Args:           cniArgs,
		CapabilityArgs: capArgs,
	}

	switch cmd {
	case "add":
		result, err := cninet.AddNetworkList(ctx, netconf, rt)
		if err != nil {
			fail(err)
		}
		if result != nil {
			if err := result.Print(); err != nil {
				fail(err)
			}
		}
	case "check":
		if err := cninet.CheckNetworkList(ctx, netconf, rt); err != nil {
			fail(err)
		}
	case "del":
		if err := cninet.DelNetworkList(ctx, netconf, rt); err != nil {
			fail(err)
		}
	case "cached":
		result, err := cninet.GetNetworkListCachedResult(netconf, rt)
		if err != nil {
			fail(err)
		}
		if result == nil {
			fmt.Println("null")
		} else if err := result.Print(); err != nil {
			fail(err)
		}
	}
}
