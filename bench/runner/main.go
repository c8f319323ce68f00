// The bench's measuring hand: runs programs as whole processes and reports, per run, the wall time
// from fork to reaped exit and the peak RSS the kernel accounted to it (wait4's ru_maxrss, which
// covers the process and the children it waited for). Standard library only; built with
// GO111MODULE=off. The bench starts it inside the node netns, so every child runs there too.
//
// stdin: a Plan (JSON); stdout: a Report (JSON).
//
//	mode "rounds": warmup+rounds passes over steps, in order, so subjects alternate run by run
//	               (A/B/A/B...) and drift of the machine hits them all alike; warm-up runs are dropped.
//	mode "batch":  every job starts at once (after a barrier); per-job latency from the barrier and
//	               the batch's total.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type Command struct {
	Argv  []string `json:"argv"`
	Env   []string `json:"env"`
	Stdin string   `json:"stdin"`
	// Keep stdout and stderr of successful runs too (they are always kept for failed ones).
	KeepOutput bool `json:"keepOutput"`
}

type Step struct {
	Command
	Name string `json:"name"`
	// Unmeasured steps (clean-ups between measured runs) must still succeed.
	Measure bool `json:"measure"`
}

type Plan struct {
	Mode   string    `json:"mode"`
	Warmup int       `json:"warmup"`
	Rounds int       `json:"rounds"`
	Steps  []Step    `json:"steps"`
	Jobs   []Command `json:"jobs"`
	// Sample each child's RssAnon in /proc every millisecond. ru_maxrss also counts the executable's
	// file pages, which are shared page cache and vary with how the kernel cached the file (a fresh
	// copy of the same binary shows ~10 MiB less); the anonymous part is what each run adds.
	SampleAnon bool `json:"sampleAnon"`
}

type Run struct {
	WallNs int64 `json:"wallNs"`
	// User + system CPU time of the process and the children it waited for: less sensitive than
	// wall time to other load on the machine.
	CPUNs     int64 `json:"cpuNs"`
	MaxRssKiB int64 `json:"maxRssKiB"`
	// Largest RssAnon seen while it ran (only with sampleAnon).
	MaxAnonKiB int64  `json:"maxAnonKiB,omitempty"`
	Exit       int    `json:"exit"`
	Stdout     string `json:"stdout,omitempty"`
	Stderr     string `json:"stderr,omitempty"`
}

type StepReport struct {
	Name       string  `json:"name"`
	WallNs     []int64 `json:"wallNs"`
	CPUNs      []int64 `json:"cpuNs"`
	MaxRssKiB  []int64 `json:"maxRssKiB"`
	MaxAnonKiB []int64 `json:"maxAnonKiB"`
	Failures   int     `json:"failures"`
	// The first failed run's output, to say why.
	FirstFailure *Run `json:"firstFailure,omitempty"`
}

type Report struct {
	Steps   []StepReport `json:"steps,omitempty"`
	Jobs    []Run        `json:"jobs,omitempty"`
	TotalNs int64        `json:"totalNs,omitempty"`
}

// execute runs one command to completion. A run that cannot start or exits non-zero has Exit != 0
// and keeps its output.
func execute(c Command, since time.Time, sampleAnon bool) Run {
	cmd := exec.Command(c.Argv[0], c.Argv[1:]...)
	cmd.Env = c.Env
	cmd.Stdin = bytes.NewReader([]byte(c.Stdin))
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if since.IsZero() {
		since = time.Now()
	}
	var maxAnon int64
	err := cmd.Start()
	if err == nil {
		if sampleAnon {
			done := make(chan struct{})
			sampled := make(chan int64)
			go sampleRssAnon(cmd.Process.Pid, done, sampled)
			err = cmd.Wait()
			close(done)
			maxAnon = <-sampled
		} else {
			err = cmd.Wait()
		}
	}
	wall := time.Since(since).Nanoseconds()
	r := Run{WallNs: wall, MaxAnonKiB: maxAnon, Exit: 0}
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			r.MaxRssKiB = ru.Maxrss
			r.CPUNs = ru.Utime.Nano() + ru.Stime.Nano()
		}
		r.Exit = cmd.ProcessState.ExitCode()
	}
	if err != nil && r.Exit == 0 {
		r.Exit = -1
		stderr.WriteString(err.Error())
	}
	if r.Exit != 0 || c.KeepOutput {
		r.Stdout, r.Stderr = stdout.String(), stderr.String()
	}
	return r
}

// sampleRssAnon reports the largest RssAnon of pid seen until done is closed.
func sampleRssAnon(pid int, done <-chan struct{}, result chan<- int64) {
	path := fmt.Sprintf("/proc/%d/status", pid)
	var max int64
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		if status, err := os.ReadFile(path); err == nil {
			for _, line := range strings.Split(string(status), "\n") {
				if strings.HasPrefix(line, "RssAnon:") {
					if kib, err := strconv.ParseInt(strings.Fields(line)[1], 10, 64); err == nil && kib > max {
						max = kib
					}
				}
			}
		}
		select {
		case <-done:
			result <- max
			return
		case <-tick.C:
		}
	}
}

func rounds(plan Plan) (Report, error) {
	reports := make([]StepReport, len(plan.Steps))
	for i, s := range plan.Steps {
		reports[i].Name = s.Name
	}
	for round := 0; round < plan.Warmup+plan.Rounds; round++ {
		for i, s := range plan.Steps {
			r := execute(s.Command, time.Time{}, plan.SampleAnon)
			if !s.Measure {
				if r.Exit != 0 {
					return Report{}, fmt.Errorf("unmeasured step %q failed (exit %d): %s%s", s.Name, r.Exit, r.Stdout, r.Stderr)
				}
				continue
			}
			if round < plan.Warmup {
				continue
			}
			rep := &reports[i]
			if r.Exit != 0 {
				rep.Failures++
				if rep.FirstFailure == nil {
					failed := r
					rep.FirstFailure = &failed
				}
				continue
			}
			rep.WallNs = append(rep.WallNs, r.WallNs)
			rep.CPUNs = append(rep.CPUNs, r.CPUNs)
			rep.MaxAnonKiB = append(rep.MaxAnonKiB, r.MaxAnonKiB)
			rep.MaxRssKiB = append(rep.MaxRssKiB, r.MaxRssKiB)
		}
	}
	measured := reports[:0]
	for i, s := range plan.Steps {
		if s.Measure {
			measured = append(measured, reports[i])
		}
	}
	return Report{Steps: measured}, nil
}

func batch(plan Plan) Report {
	runs := make([]Run, len(plan.Jobs))
	start := make(chan struct{})
	var ready, done sync.WaitGroup
	var released time.Time
	for i, job := range plan.Jobs {
		ready.Add(1)
		done.Add(1)
		go func(i int, job Command) {
			defer done.Done()
			ready.Done()
			<-start
			runs[i] = execute(job, released, false)
		}(i, job)
	}
	ready.Wait()
	released = time.Now()
	close(start)
	done.Wait()
	return Report{Jobs: runs, TotalNs: time.Since(released).Nanoseconds()}
}

func main() {
	var plan Plan
	if err := json.NewDecoder(os.Stdin).Decode(&plan); err != nil {
		fmt.Fprintf(os.Stderr, "runner: bad plan: %v\n", err)
		os.Exit(2)
	}
	var report Report
	switch plan.Mode {
	case "rounds":
		var err error
		if report, err = rounds(plan); err != nil {
			fmt.Fprintf(os.Stderr, "runner: %v\n", err)
			os.Exit(1)
		}
	case "batch":
		report = batch(plan)
	default:
		fmt.Fprintf(os.Stderr, "runner: unknown mode %q\n", plan.Mode)
		os.Exit(2)
	}
	if err := json.NewEncoder(os.Stdout).Encode(report); err != nil {
		fmt.Fprintf(os.Stderr, "runner: %v\n", err)
		os.Exit(1)
	}
}
