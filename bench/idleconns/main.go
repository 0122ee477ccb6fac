// Command idleconns measures the memory a proxy spends per idle keep-alive
// client connection: it opens N connections at a bounded rate, sends one
// request on each and reads the response, lets them sit idle, and reports
// the growth of the proxy's resident set (VmRSS of PID and its children,
// e.g. nginx's worker) divided by N. With -metrics it also reads the
// proxy's go_goroutines and holdfast_listener_idle_connections while the
// connections idle. One JSON line on stdout; bench/idle.sh runs it per
// target and round.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type result struct {
	Target        string  `json:"target"`
	Conns         int     `json:"conns"`
	Failed        int     `json:"failed"`
	RSSBeforeKB   int64   `json:"rss_before_kb"`
	RSSIdleKB     int64   `json:"rss_idle_kb"`
	BytesPerConn  float64 `json:"bytes_per_conn"`
	Goroutines    float64 `json:"goroutines"`
	GoroutinesPre float64 `json:"goroutines_before"`
	Parked        float64 `json:"parked"`
	OpenSeconds   float64 `json:"open_seconds"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "proxy address")
	pid := flag.Int("pid", 0, "proxy PID (its children are counted too)")
	n := flag.Int("n", 5000, "idle connections")
	inflight := flag.Int("inflight", 64, "connections being opened at once (the rate bound)")
	settle := flag.Duration("settle", 4*time.Second, "idle time before the measurement")
	metrics := flag.String("metrics", "", "URL of the proxy's Prometheus metrics (holdfast), optional")
	target := flag.String("target", "", "name in the output")
	warm := flag.Bool("warm", false, "first open and close N connections once (code paged in, pools sized, any post-burst trim done), then measure")
	flag.Parse()
	if *pid == 0 {
		log.Fatal("-pid is required")
	}
	raiseNofile(uint64(*n) + 1024)

	var r result
	r.Target, r.Conns = *target, *n
	if *warm {
		for _, c := range openAll(*addr, *n, *inflight, new(int)) {
			if c != nil {
				_ = c.Close()
			}
		}
		time.Sleep(*settle)
	}
	r.GoroutinesPre = scrape(*metrics, "go_goroutines")
	r.RSSBeforeKB = rssKB(*pid)

	start := time.Now()
	conns := openAll(*addr, *n, *inflight, &r.Failed)
	r.OpenSeconds = time.Since(start).Seconds()
	time.Sleep(*settle) // the connections idle: that is what is measured
	r.RSSIdleKB = rssKB(*pid)
	r.Goroutines = scrape(*metrics, "go_goroutines")
	r.Parked = scrape(*metrics, "holdfast_listener_idle_connections")
	open := *n - r.Failed
	if open > 0 {
		r.BytesPerConn = float64(r.RSSIdleKB-r.RSSBeforeKB) * 1024 / float64(open)
	}
	for _, c := range conns {
		if c != nil {
			_ = c.Close()
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		log.Fatal(err)
	}
}

// openAll opens n idle connections, inflight at a time; failed counts the
// ones that did not make it.
func openAll(addr string, n, inflight int, failed *int) []net.Conn {
	conns := make([]net.Conn, n)
	sem := make(chan struct{}, inflight)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range conns {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := openIdle(addr)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				*failed++
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	return conns
}

// openIdle connects, sends one keep-alive request and reads its response.
func openIdle(addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: bench\r\n\r\n"); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("write: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 512), nil)
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("read response: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		_ = c.Close()
		return nil, fmt.Errorf("status %d, close %v", resp.StatusCode, resp.Close)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// rssKB is VmRSS of pid plus its direct children.
func rssKB(pid int) int64 {
	total := vmRSS(pid)
	kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, f := range strings.Fields(string(kids)) {
		if k, err := strconv.Atoi(f); err == nil {
			total += vmRSS(k)
		}
	}
	return total
}

func vmRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb
			}
		}
	}
	return 0
}

// scrape sums the samples of one metric; -1 without a metrics URL.
func scrape(url, name string) float64 {
	if url == "" {
		return -1
	}
	resp, err := http.Get(url)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sum, seen := 0.0, false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || (len(line) > len(name) && line[len(name)] != ' ' && line[len(name)] != '{') {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum, seen = sum+v, true
		}
	}
	if !seen {
		return -1
	}
	return sum
}

func raiseNofile(want uint64) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return
	}
	if l.Cur < want {
		l.Cur = min(max(want, l.Cur), l.Max)
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}
