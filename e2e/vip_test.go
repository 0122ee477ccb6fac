package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFailoverPriority moves the floating IP while both holdfasts keep
// running, twice:
//
//	reload: keepalived on the master (a) is reloaded with a priority below
//	        the standby's; the standby preempts (this test's keepalived.conf
//	        drops nopreempt) and sends gratuitous ARPs, a becomes BACKUP and
//	        drops the address from eth0.
//	track_file: the new master (b) reads a track file (weight 0: a value
//	        other than 0 is a fault), the operator's "move the address away"
//	        switch; b drops the address and sends a priority-0 advert, a
//	        takes over.
//
// The client's keep-alive connections still lead to the old master, which
// keeps the address on lo (vip-local.sh) and keeps running: it closes them
// (idle ones at once, busy ones after their response, with Connection:
// close) so the client reconnects to the new one. No request may fail.
func TestFailoverPriority(t *testing.T) {
	maint := map[string]string{}
	p := foStartPair(t, func(node, conf string) string {
		file := filepath.Join(os.TempDir(), "hffo-maint-"+node+"-"+filepath.Base(t.TempDir()))
		if err := os.WriteFile(file, []byte("0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Remove(file) })
		maint[node] = file
		conf = strings.Replace(conf, "    nopreempt\n", "", 1)
		track := "vrrp_track_file holdfast_maint {\n    file \"" + file + "\"\n    weight 0\n}\n\nvrrp_instance holdfast {"
		conf = strings.Replace(conf, "vrrp_instance holdfast {", track, 1)
		return strings.Replace(conf, "    track_script {", "    track_file {\n        holdfast_maint\n    }\n    track_script {", 1)
	})
	left := map[string]int{}
	move := func(t *testing.T, from, to, fromIP, toIP string, act func(t *testing.T)) {
		c := foStartClient(t, p.n, p.self)
		c.waitServed(t, fromIP, foPhaseServed, 20*time.Second)
		before := c.last()
		act(t)
		movedAt := time.Now()
		foWait(t, 10*time.Second, "floating IP on "+to, func() bool { return p.n.vipOn(to) })
		c.waitServedSince(t, toIP, before, foPhaseServed, 30*time.Second)
		moved := time.Since(movedAt)
		st := c.stop(t)
		t.Logf("%s: %s; served by %s after the switch began: %d; %s serving %s after it",
			t.Name(), st, from, st.By[fromIP]-before.By[fromIP], to, moved.Round(time.Millisecond))
		if st.Fail != 0 {
			t.Errorf("switch lost %d requests, want 0: %v", st.Fail, st.Errors)
		}
		if p.n.vipOn(from) {
			t.Errorf("floating IP still on %s's eth0 after the switch", from)
		}
		foWait(t, 5*time.Second, "holdfast "+from+" to log that the listener's address left", func() bool {
			return p.hf[from].out.count("listener address left this host") > left[from]
		})
		left[from] = p.hf[from].out.count("listener address left this host")
		for _, node := range []string{"a", "b"} {
			select {
			case <-p.hf[node].done:
				t.Fatalf("holdfast %s exited; it must keep running through a priority switch", node)
			default:
			}
		}
	}
	t.Run("reload", func(t *testing.T) {
		move(t, "a", "b", foNodeA, foNodeB, func(t *testing.T) {
			conf := filepath.Join(p.work, "keepalived-a.conf")
			b, err := os.ReadFile(conf)
			if err != nil {
				t.Fatal(err)
			}
			lower := strings.Replace(string(b), "priority 150", "priority 50", 1)
			if lower == string(b) {
				t.Fatal("keepalived-a.conf: priority 150 not found")
			}
			if err := os.WriteFile(conf, []byte(lower), 0o644); err != nil {
				t.Fatal(err)
			}
			p.ka["a"].signal(syscall.SIGHUP)
		})
	})
	if t.Failed() {
		return
	}
	t.Run("track_file", func(t *testing.T) {
		move(t, "b", "a", foNodeB, foNodeA, func(t *testing.T) {
			if err := os.WriteFile(maint["b"], []byte("1\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		})
	})
}
