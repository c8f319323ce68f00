// The bench's reference clients: the least a compiled program can do for an injected pod's ADD, in
// two ways of programming the rules. Standard library only; built with GO111MODULE=off.
//
//	gopod restore  RULES.txt   the floor: the pod GET, then one `nsenter iptables-restore --noflush`
//	gopod per-rule RULES.json  the seed-era way: the pod GET, then one `nsenter iptables` per rule
//	                           (RULES.json: an array of iptables argument lists)
//
// Like a CNI plugin it reads the network config on stdin (kubernetes.kubeconfig, prevResult) and
// CNI_NETNS / CNI_ARGS from the environment, and prints prevResult. The kubeconfig must be JSON
// (a kubeconfig may be written as JSON; the bench writes it so), with the CA and token inline.
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"time"
)

const (
	nsenter         = "/usr/bin/nsenter"
	iptables        = "/usr/sbin/iptables-nft"
	iptablesRestore = "/usr/sbin/iptables-nft-restore"
)

type netConf struct {
	CniVersion string          `json:"cniVersion"`
	PrevResult json.RawMessage `json:"prevResult"`
	Kubernetes struct {
		Kubeconfig string `json:"kubeconfig"`
	} `json:"kubernetes"`
}

type kubeconfig struct {
	CurrentContext string `json:"current-context"`
	Contexts       []struct {
		Name    string `json:"name"`
		Context struct {
			Cluster string `json:"cluster"`
			User    string `json:"user"`
		} `json:"context"`
	} `json:"contexts"`
	Clusters []struct {
		Name    string `json:"name"`
		Cluster struct {
			Server string `json:"server"`
			CAData string `json:"certificate-authority-data"`
		} `json:"cluster"`
	} `json:"clusters"`
	Users []struct {
		Name string `json:"name"`
		User struct {
			Token string `json:"token"`
		} `json:"user"`
	} `json:"users"`
}

type pod struct {
	Metadata struct {
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		Containers []struct {
			Name string `json:"name"`
		} `json:"containers"`
	} `json:"spec"`
}

func fail(format string, args ...interface{}) {
	fmt.Printf(`{"cniVersion":"1.0.0","code":100,"msg":%q}`+"\n", fmt.Sprintf(format, args...))
	os.Exit(1)
}

func cniArg(key string) string {
	for _, kv := range strings.Split(os.Getenv("CNI_ARGS"), ";") {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}

func connection(path string) (server, token string, pool *x509.CertPool) {
	raw, err := os.ReadFile(path)
	if err != nil {
		fail("kubeconfig: %v", err)
	}
	var kc kubeconfig
	if err := json.Unmarshal(raw, &kc); err != nil {
		fail("kubeconfig: %v", err)
	}
	var clusterName, userName string
	for _, c := range kc.Contexts {
		if c.Name == kc.CurrentContext {
			clusterName, userName = c.Context.Cluster, c.Context.User
		}
	}
	pool = x509.NewCertPool()
	for _, c := range kc.Clusters {
		if c.Name == clusterName {
			server = c.Cluster.Server
			pem, err := base64.StdEncoding.DecodeString(c.Cluster.CAData)
			if err != nil || !pool.AppendCertsFromPEM(pem) {
				fail("kubeconfig: bad certificate-authority-data")
			}
		}
	}
	for _, u := range kc.Users {
		if u.Name == userName {
			token = u.User.Token
		}
	}
	return server, token, pool
}

func getPod(server, token string, pool *x509.CertPool, namespace, name string) pod {
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	req, _ := http.NewRequest("GET", server+"/api/v1/namespaces/"+url.PathEscape(namespace)+"/pods/"+url.PathEscape(name), nil)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := client.Do(req)
	if err != nil {
		fail("pod GET: %v", err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != 200 {
		fail("pod GET: HTTP %d %v", res.StatusCode, err)
	}
	var p pod
	if err := json.Unmarshal(body, &p); err != nil {
		fail("pod GET: %v", err)
	}
	return p
}

func injected(p pod) bool {
	if _, ok := p.Metadata.Annotations["sidecar.istio.io/status"]; !ok {
		return false
	}
	for _, c := range p.Spec.Containers {
		if c.Name == "istio-proxy" {
			return true
		}
	}
	return false
}

func run(argv []string, stdin []byte) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{}
	cmd.Stdin = bytes.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		fail("%s: %v: %s", strings.Join(argv, " "), err, out)
	}
}

func main() {
	if len(os.Args) != 3 || (os.Args[1] != "restore" && os.Args[1] != "per-rule") {
		fmt.Fprintln(os.Stderr, "usage: gopod restore RULES.txt | gopod per-rule RULES.json")
		os.Exit(2)
	}
	var conf netConf
	if err := json.NewDecoder(os.Stdin).Decode(&conf); err != nil {
		fail("stdin: %v", err)
	}
	rules, err := os.ReadFile(os.Args[2])
	if err != nil {
		fail("rules: %v", err)
	}
	netns := "--net=" + os.Getenv("CNI_NETNS")
	server, token, pool := connection(conf.Kubernetes.Kubeconfig)
	if injected(getPod(server, token, pool, cniArg("K8S_POD_NAMESPACE"), cniArg("K8S_POD_NAME"))) {
		if os.Args[1] == "restore" {
			run([]string{nsenter, netns, iptablesRestore, "--noflush"}, rules)
		} else {
			var commands [][]string
			if err := json.Unmarshal(rules, &commands); err != nil {
				fail("rules: %v", err)
			}
			for _, args := range commands {
				run(append([]string{nsenter, netns, iptables}, args...), nil)
			}
		}
	}
	if len(conf.PrevResult) == 0 {
		conf.PrevResult = json.RawMessage(`{"cniVersion":"` + conf.CniVersion + `"}`)
	}
	os.Stdout.Write(append(conf.PrevResult, '\n'))
}
