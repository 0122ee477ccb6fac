// Package etcdtest runs a real etcd (Debian's etcd-server, /usr/bin/etcd,
// installed by scripts/deps.sh) on 127.0.0.1 for tests: random ports, a
// temporary data dir, started and killed by PID.
package etcdtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/holdfast-lb/holdfast/internal/freeport"
)

// Binary is the etcd server the tests run.
const Binary = "/usr/bin/etcd"

// Server is one etcd member. Not safe for concurrent Kill/Restart.
type Server struct {
	// Endpoint is the client URL, http://127.0.0.1:PORT.
	Endpoint string
	tb       testing.TB
	dir      string
	args     []string
	cmd      *exec.Cmd
	exited   chan struct{}
	cli      *clientv3.Client
}

// Start runs etcd and waits until it answers; it is killed at the end of
// the test.
func Start(tb testing.TB) *Server {
	tb.Helper()
	if _, err := os.Stat(Binary); err != nil {
		tb.Fatalf("etcd server not installed (%v): run scripts/deps.sh (Debian package etcd-server)", err)
	}
	dir := tb.TempDir()
	client, peer := freePort(tb), freePort(tb)
	s := &Server{Endpoint: "http://" + client, tb: tb, dir: dir}
	s.args = []string{
		"--name", "t", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", s.Endpoint, "--advertise-client-urls", s.Endpoint,
		"--listen-peer-urls", "http://" + peer, "--initial-advertise-peer-urls", "http://" + peer,
		"--initial-cluster", "t=http://" + peer, "--initial-cluster-state", "new",
		"--log-level", "error",
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.Endpoint}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		tb.Fatal(err)
	}
	s.cli = cli
	tb.Cleanup(func() {
		s.Kill()
		_ = cli.Close()
	})
	s.Restart()
	return s
}

// Restart starts the member again (same ports, same data) after Kill, and
// waits until it answers.
func (s *Server) Restart() {
	s.tb.Helper()
	log, err := os.OpenFile(filepath.Join(s.dir, "etcd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		s.tb.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(Binary, s.args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		s.tb.Fatalf("start etcd: %v", err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(s.exited) }()
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_, err := s.cli.Get(ctx, "/etcdtest/ready")
		cancel()
		if err == nil {
			return
		}
		select {
		case <-s.exited:
			s.tb.Fatalf("etcd exited at start: %s", s.logTail())
		default:
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("etcd not answering after 15s: %v\n%s", err, s.logTail())
		}
		<-tick.C
	}
}

// Kill stops the member at once (SIGKILL to its PID) and waits for it.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Put writes key = value.
func (s *Server) Put(key, value string) {
	s.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.cli.Put(ctx, key, value); err != nil {
		s.tb.Fatalf("etcd put %s: %v", key, err)
	}
}

// Delete removes key, or every key under it when prefix is true.
func (s *Server) Delete(key string, prefix bool) {
	s.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var opts []clientv3.OpOption
	if prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	if _, err := s.cli.Delete(ctx, key, opts...); err != nil {
		s.tb.Fatalf("etcd delete %s: %v", key, err)
	}
}

// Compact discards the history before the current revision.
func (s *Server) Compact() {
	s.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := s.cli.Get(ctx, "/etcdtest/rev")
	if err == nil {
		_, err = s.cli.Compact(ctx, resp.Header.Revision)
	}
	if err != nil {
		s.tb.Fatalf("etcd compact: %v", err)
	}
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "etcd.log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}

func freePort(tb testing.TB) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(freeport.Port(tb)))
}

// String names the member in failure messages.
func (s *Server) String() string { return fmt.Sprintf("etcd %s", s.Endpoint) }
