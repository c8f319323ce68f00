// standin plays the parts of Istio's proxy image in the real-cluster tests, where there is no
// Envoy and no registry. One static binary, chosen by its first argument the way the injected
// containers call Istio's pilot-agent:
//
//	standin proxy ...               the istio-proxy container (any arguments, e.g. "proxy sidecar ..."):
//	                                listens on 15001 (outbound) and 15006 (inbound); every accepted
//	                                connection is answered with one JSON line naming this pod, the
//	                                listener and the connection's original destination (SO_ORIGINAL_DST),
//	                                also printed on stdout (kubectl logs); 15021 and 15020 answer
//	                                HTTP 200 so the injected probes pass. An inbound connection whose
//	                                original destination is one of those two ports is passed through to
//	                                it from 127.0.0.6, as Envoy's inbound passthrough does: the seed's
//	                                rules exclude only 15020 from capture, so the kubelet's probes of
//	                                15021 arrive on 15006.
//	standin istio-iptables ... --run-validation ...
//	                                the istio-validation init container: runs `istio-cni validate`
//	                                (our dist/istio-cni in the same image) in its place.
//	standin app PORT                an application: the same JSON line, from PORT (not captured).
//	                                With CAPTURE_REPORT_DIR set it first checks, from its own network
//	                                namespace, whether its traffic is captured (see reportCapture).
//	standin connect HOST:PORT       connects, prints the line the other end answered with, exits 0.
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// soOriginalDst is SO_ORIGINAL_DST (IPv4) and IP6T_SO_ORIGINAL_DST (IPv6): the address a
// connection was sent to before iptables' REDIRECT rewrote it.
const soOriginalDst = 80

const istioCni = "/usr/local/bin/istio-cni"

// healthPorts answer HTTP 200 (Istio's readiness port and its merged metrics/app-probe port).
var healthPorts = []int{15021, 15020}

// passthroughSource is where Envoy's inbound passthrough connects from: ISTIO_OUTPUT lets it go.
var passthroughSource = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 6)}

// Report is what each listener answers (and logs) for one connection.
type Report struct {
	Pod            string `json:"pod"`
	Listener       int    `json:"listener"`
	OriginalDst    string `json:"original_dst"`
	Peer           string `json:"peer"`
	OriginalDstErr string `json:"original_dst_error,omitempty"`
}

func main() {
	mode := ""
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	var err error
	switch mode {
	case "istio-iptables":
		err = validate(os.Args[2:])
	case "app":
		if len(os.Args) != 3 {
			err = fmt.Errorf("usage: standin app PORT")
			break
		}
		err = app(os.Args[2])
	case "connect":
		if len(os.Args) != 3 {
			err = fmt.Errorf("usage: standin connect HOST:PORT")
			break
		}
		err = connect(os.Args[2])
	default:
		err = proxy()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "standin %s: %v\n", mode, err)
		os.Exit(2)
	}
}

// validate replaces pilot-agent's istio-iptables in the istio-validation init container. Only
// the validation form (CNI mode) is played: an istio-init container would have to program rules,
// which this stand-in must never pretend to do.
func validate(args []string) error {
	if !slices.Contains(args, "--run-validation") {
		return fmt.Errorf("only the istio-validation form (--run-validation) is played here, got %q", args)
	}
	return syscall.Exec(istioCni, []string{istioCni, "validate"}, os.Environ())
}

func proxy() error {
	errs := make(chan error, 4)
	for _, port := range []int{15001, 15006} {
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			return err
		}
		go func() { errs <- serve(ln, port) }()
	}
	health := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	for _, port := range healthPorts {
		srv := &http.Server{Addr: fmt.Sprintf(":%d", port), Handler: health, ReadHeaderTimeout: 5 * time.Second}
		go func() { errs <- srv.ListenAndServe() }()
	}
	return <-errs
}

func app(portArg string) error {
	port, err := strconv.Atoi(portArg)
	if err != nil || port < 1 || port > 65535 {
		return fmt.Errorf("bad port %q", portArg)
	}
	if err := reportCapture(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		return err
	}
	return serve(ln, port)
}

func serve(ln net.Listener, port int) error {
	pod, _ := os.Hostname()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer conn.Close()
			r := Report{Pod: pod, Listener: port, Peer: conn.RemoteAddr().String()}
			if dst, err := originalDst(conn.(*net.TCPConn)); err != nil {
				r.OriginalDstErr = err.Error()
			} else {
				r.OriginalDst = dst
			}
			if port == 15006 && isHealthPort(r.OriginalDst) {
				passThrough(conn, r.OriginalDst)
				return
			}
			line, _ := json.Marshal(r)
			fmt.Println(string(line))
			_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, _ = conn.Write(append(line, '\n'))
		}()
	}
}

func isHealthPort(hostPort string) bool {
	_, p, err := net.SplitHostPort(hostPort)
	port, _ := strconv.Atoi(p)
	return err == nil && slices.Contains(healthPorts, port)
}

// CaptureReport is what an application container found when it started: the real-cluster tests'
// record of every start of every pod, independent of the plugin and of istio-validation.
type CaptureReport struct {
	UID      string `json:"uid"`
	Pod      string `json:"pod"`
	Captured bool   `json:"captured"`
	Probe    string `json:"probe"`
	Answer   string `json:"answer,omitempty"`
	Error    string `json:"error,omitempty"`
	At       string `json:"at"`
}

// reportCapture runs before the application serves, when CAPTURE_REPORT_DIR is set (a host
// directory): it waits until its pod's proxy listens (15021 on 127.0.0.1, which the rules never
// capture), connects to CAPTURE_PROBE (an address outside the pod where the proxy does not listen)
// and counts the connection as captured only when this pod's own proxy answers it on 15001 with
// CAPTURE_PROBE as the original destination. Without the rules the connection goes to the probe
// address itself and is refused (or answered by something else). One file per start,
// <POD_UID>-<nanoseconds>.json, written whole (a rename).
func reportCapture() error {
	dir := os.Getenv("CAPTURE_REPORT_DIR")
	if dir == "" {
		return nil
	}
	pod, _ := os.Hostname()
	r := CaptureReport{UID: os.Getenv("POD_UID"), Pod: pod, Probe: os.Getenv("CAPTURE_PROBE")}
	if err := waitListening("127.0.0.1:15021", 60*time.Second); err != nil {
		r.Error = "the proxy never listened: " + err.Error()
	} else if conn, err := net.DialTimeout("tcp", r.Probe, 5*time.Second); err != nil {
		r.Error = err.Error()
	} else {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		r.Answer = line
		var answer Report
		if err != nil {
			r.Error = err.Error()
		} else if json.Unmarshal([]byte(line), &answer) == nil {
			r.Captured = answer.Pod == pod && answer.Listener == 15001 && answer.OriginalDst == r.Probe
		}
	}
	r.At = time.Now().UTC().Format(time.RFC3339Nano)
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
	name := fmt.Sprintf("%s-%d.json", r.UID, time.Now().UnixNano())
	tmp := dir + "/." + name
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, dir+"/"+name)
}

func waitListening(addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// passThrough splices conn to dst, connecting from 127.0.0.6.
func passThrough(conn net.Conn, dst string) {
	d := net.Dialer{LocalAddr: passthroughSource, Timeout: 5 * time.Second}
	up, err := d.Dial("tcp", dst)
	if err != nil {
		fmt.Fprintf(os.Stderr, "standin: passthrough to %s: %v\n", dst, err)
		return
	}
	defer up.Close()
	go func() {
		_, _ = io.Copy(up, conn)
		_ = up.(*net.TCPConn).CloseWrite()
	}()
	// Done when the far end has answered and closed; the caller then closes conn.
	_, _ = io.Copy(conn, up)
}

// originalDst reads SO_ORIGINAL_DST: a sockaddr_in (IPv4) or sockaddr_in6 (IPv6), port and
// address in network byte order.
func originalDst(conn *net.TCPConn) (string, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return "", err
	}
	local := conn.LocalAddr().(*net.TCPAddr)
	var dst string
	var opErr error
	err = raw.Control(func(fd uintptr) {
		if local.IP.To4() != nil {
			// A sockaddr_in fits the 16 bytes of an ipv6_mreq, the only getsockopt of that size in syscall.
			m, e := syscall.GetsockoptIPv6Mreq(int(fd), syscall.SOL_IP, soOriginalDst)
			if e != nil {
				opErr = e
				return
			}
			b := m.Multiaddr[:]
			dst = net.JoinHostPort(net.IP(b[4:8]).String(), strconv.Itoa(int(binary.BigEndian.Uint16(b[2:4]))))
			return
		}
		// A sockaddr_in6 (28 bytes) fits the 32 of an ip6_mtuinfo.
		m, e := syscall.GetsockoptIPv6MTUInfo(int(fd), syscall.SOL_IPV6, soOriginalDst)
		if e != nil {
			opErr = e
			return
		}
		// Port holds the network-order bytes read as a host-order (little-endian) uint16.
		port := m.Addr.Port>>8 | m.Addr.Port<<8
		dst = net.JoinHostPort(net.IP(m.Addr.Addr[:]).String(), strconv.Itoa(int(port)))
	})
	if err != nil {
		return "", err
	}
	return dst, opErr
}

func connect(target string) error {
	conn, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("no answer from %s: %w", target, err)
	}
	fmt.Print(line)
	return nil
}
