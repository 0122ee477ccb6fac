// Command idleconns measures the memory a proxy spends per idle keep-alive
// client connection: it opens N connections at a bounded rate, sends one
// request on each and reads the response, lets them sit idle, and reports
// the growth of the proxy's resident set (VmRSS of PID and its children,
// e.g. nginx's worker) divided by N. With -metrics it also reads the
// proxy's go_goroutines and holdfast_listener_idle_connections while the
// connections idle. One JSON line on stdout; bench/idle.sh runs it per
// target and round.
//
// With -sparse D it measures what a resume costs instead: after opening the
// N connections, each sends one request every -every (staggered), so
// every request finds its connection idle for seconds (parked, in
// holdfast); meanwhile -hot connections send back to back (a request
// every -hot-every, never idle long enough to park). For D it reports
// the latency p50/p99 of both kinds and the proxy's CPU per request
// (utime+stime of PID and its children over the window).
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
	"slices"
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
	sparse := flag.Duration("sparse", 0, "measure resumed vs hot requests for this long instead of memory (0: off)")
	every := flag.Duration("every", 3*time.Second, "with -sparse: one request per connection this often")
	hot := flag.Int("hot", 8, "with -sparse: connections sending back to back")
	hotEvery := flag.Duration("hot-every", 2*time.Millisecond, "with -sparse: a hot connection's request interval")
	flag.Parse()
	if *pid == 0 {
		log.Fatal("-pid is required")
	}
	raiseNofile(uint64(*n+*hot) + 1024)
	if *sparse > 0 {
		runSparse(*addr, *target, *pid, *n, *inflight, *hot, *sparse, *every, *hotEvery, *metrics)
		return
	}

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

type sparseResult struct {
	Target          string  `json:"target"`
	Conns           int     `json:"conns"`
	EverySeconds    float64 `json:"every_s"`
	Failed          int     `json:"failed"`
	Resumed         int     `json:"resumed_requests"`
	ResumedP50us    float64 `json:"resumed_p50_us"`
	ResumedP99us    float64 `json:"resumed_p99_us"`
	Hot             int     `json:"hot_requests"`
	HotP50us        float64 `json:"hot_p50_us"`
	HotP99us        float64 `json:"hot_p99_us"`
	CPUusPerRequest float64 `json:"cpu_us_per_req"`
	CPUPercent      float64 `json:"cpu_percent"`
	Goroutines      float64 `json:"goroutines"`
}

// runSparse is the -sparse mode: n connections resumed every `every`, hot
// ones alongside, for d.
func runSparse(addr, target string, pid, n, inflight, hot int, d, every, hotEvery time.Duration, metrics string) {
	r := sparseResult{Target: target, Conns: n, EverySeconds: every.Seconds()}
	conns := openAll(addr, n, inflight, &r.Failed)
	hots := openAll(addr, hot, hot, &r.Failed)
	var mu sync.Mutex
	var resumed, hotLat []time.Duration
	failed := 0
	t0 := time.Now()
	cpu0 := cpuTicks(pid)
	end := t0.Add(d)
	var wg sync.WaitGroup
	loop := func(c net.Conn, first, interval time.Duration, into *[]time.Duration) {
		defer wg.Done()
		br := bufio.NewReaderSize(c, 512)
		next := t0.Add(first)
		for next.Before(end) {
			time.Sleep(time.Until(next))
			start := time.Now()
			err := roundTrip(c, br)
			lat := time.Since(start)
			mu.Lock()
			if err != nil {
				failed++
				mu.Unlock()
				return
			}
			*into = append(*into, lat)
			mu.Unlock()
			next = next.Add(interval)
		}
	}
	for i, c := range conns {
		if c == nil {
			continue
		}
		wg.Add(1)
		go loop(c, every*time.Duration(i)/time.Duration(max(n, 1)), every, &resumed)
	}
	for _, c := range hots {
		if c == nil {
			continue
		}
		wg.Add(1)
		go loop(c, 0, hotEvery, &hotLat)
	}
	time.Sleep(d / 2)
	r.Goroutines = scrape(metrics, "go_goroutines")
	wg.Wait()
	wall := time.Since(t0)
	ticks := cpuTicks(pid) - cpu0
	r.Failed += failed
	r.Resumed, r.Hot = len(resumed), len(hotLat)
	r.ResumedP50us, r.ResumedP99us = pct(resumed, 0.50), pct(resumed, 0.99)
	r.HotP50us, r.HotP99us = pct(hotLat, 0.50), pct(hotLat, 0.99)
	cpuSec := float64(ticks) / 100 // USER_HZ
	if total := r.Resumed + r.Hot; total > 0 {
		r.CPUusPerRequest = cpuSec * 1e6 / float64(total)
	}
	r.CPUPercent = cpuSec / wall.Seconds() * 100
	for _, c := range append(conns, hots...) {
		if c != nil {
			_ = c.Close()
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		log.Fatal(err)
	}
}

// roundTrip sends one keep-alive GET on c and reads its response.
func roundTrip(c net.Conn, br *bufio.Reader) error {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: bench\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		return fmt.Errorf("status %d, close %v", resp.StatusCode, resp.Close)
	}
	return nil
}

func pct(xs []time.Duration, p float64) float64 {
	if len(xs) == 0 {
		return -1
	}
	slices.Sort(xs)
	return float64(xs[int(p*float64(len(xs)-1))].Nanoseconds()) / 1000
}

// cpuTicks is utime+stime (clock ticks) of pid and its direct children.
func cpuTicks(pid int) int64 {
	total := procTicks(pid)
	kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, f := range strings.Fields(string(kids)) {
		if k, err := strconv.Atoi(f); err == nil {
			total += procTicks(k)
		}
	}
	return total
}

func procTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces) close with ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}
