package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFailoverPriority moves the floating IP while both holdfasts keep
// running: keepalived on the master reads a track file (weight 0: a value
// other than 0 is a fault), the operator's "move the address away" switch.
// The master drops the address from eth0 and sends a priority-0 advert; the
// standby takes over and sends gratuitous ARPs. The client's keep-alive
// connections still lead to the old master, which keeps the address on lo
// (vip-local.sh) and keeps running: it must close them (idle ones at once,
// busy ones after their response, with Connection: close) so the client
// reconnects to the new master. No request may fail.
func TestFailoverPriority(t *testing.T) {
	maint := func(node string) string {
		return filepath.Join(os.TempDir(), "hffo-maint-"+strings.TrimPrefix(node, "/"))
	}
	p := foStartPair(t, func(node, conf string) string {
		file := maint(node)
		if err := os.WriteFile(file, []byte("0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Remove(file) })
		track := "vrrp_track_file holdfast_maint {\n    file \"" + file + "\"\n    weight 0\n}\n\nvrrp_instance holdfast {"
		conf = strings.Replace(conf, "vrrp_instance holdfast {", track, 1)
		return strings.Replace(conf, "    track_script {", "    track_file {\n        holdfast_maint\n    }\n    track_script {", 1)
	})
	c := foStartClient(t, p.n, p.self)
	c.waitServed(t, foNodeA, foPhaseServed, 20*time.Second)
	before := c.last()
	if err := os.WriteFile(maint("a"), []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	movedAt := time.Now()
	foWait(t, 10*time.Second, "floating IP on b", func() bool { return p.n.vipOn("b") })
	c.waitServedSince(t, foNodeB, before, foPhaseServed, 30*time.Second)
	moved := time.Since(movedAt)
	st := c.stop(t)
	t.Logf("priority switch: %s; served by a after the switch began: %d; b serving %s after it",
		st, st.By[foNodeA]-before.By[foNodeA], moved.Round(time.Millisecond))
	if st.Fail != 0 {
		t.Errorf("priority switch lost %d requests, want 0: %v", st.Fail, st.Errors)
	}
	if p.n.vipOn("a") {
		t.Errorf("floating IP still on a's eth0 after the switch")
	}
	if p.hf["a"].out.count(`"msg":"listener address left this host`) == 0 && p.hf["a"].out.count("listener address left this host") == 0 {
		t.Errorf("holdfast a did not log that the listener's address left:\n  %s", p.hf["a"].out)
	}
	select {
	case <-p.hf["a"].done:
		t.Errorf("holdfast a exited; it must keep running through a priority switch")
	default:
	}
}
