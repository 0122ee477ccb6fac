// Package handoff is the socket hand-over between two holdfast processes:
// how a new one takes over the listening sockets, and the state, of a
// running one without refusing a connection (run --handoff PATH).
package handoff

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/holdfast-lb/holdfast/state"
)

// Socket handoff: how a new holdfast process takes over the listening
// sockets of a running one without refusing a connection.
//
// The running process listens on a unix socket (run --handoff PATH). A new
// process started with the same flag connects to it and receives every
// listening socket (traffic listeners and admin) as file descriptors over
// SCM_RIGHTS, each labelled with its configured address. It serves on the
// sockets whose address its own config names, closes the others, moves
// PATH over to itself and answers "ok". From then on both processes accept
// from the same kernel sockets; the old one closes its copies and drains
// (App.HandOver), and nothing queued in the kernel is lost, because the
// socket itself never closes. Had the new process failed to start, it
// closes the connection instead and the old one keeps serving as before.
//
// The hello also carries the predecessor's state, the same document a
// state_file holds (last good discovery sets, health, flap holds,
// ejections, operator overrides), so an upgrade keeps them even without a
// state_file.
//
// Wire format, old to new: a 4-byte big-endian length, then a JSON hello
// of that length; the descriptors ride on the first byte, in the order of
// Sockets. New to old: the line "ok\n".

// handoffTimeout bounds each step of the exchange on both sides; a new
// process has this long between receiving the sockets and answering.
const handoffTimeout = 2 * time.Minute

// maxHandoffFDs is the kernel's per-message limit (SCM_MAX_FD).
const maxHandoffFDs = 253

// maxHello bounds the hello: a state document plus the socket list.
const maxHello = state.MaxSize + 1<<20

type helloMsg struct {
	PID     int      `json:"pid"`
	Version string   `json:"version"`
	Sockets []socket `json:"sockets"`
	// State is the predecessor's state document (state.File); absent from
	// versions before it was carried.
	State json.RawMessage `json:"state,omitempty"`
}

type socket struct {
	// Key is the app.Options.Inherited key: the configured listen address,
	// or app.AdminKey(address) for the admin socket.
	Key string `json:"key"`
	// Bound is the address actually bound, for logs.
	Bound string `json:"bound"`
}

// Server is what a running process hands to its successor. *app.App
// implements it; every method must be safe for concurrent use.
type Server interface {
	// Listeners are the traffic sockets by configured address.
	Listeners() map[string]net.Listener
	// AdminListener is the admin socket (nil: none).
	AdminListener() net.Listener
	// CloseUnusedInherited closes inherited sockets the config did not
	// claim, returning how many.
	CloseUnusedInherited() int
	// State is the state to pass on (nil: none).
	State() *state.File
}

// Handoff is one process's end of the protocol: what it inherited from its
// predecessor, and the unix socket it serves its successor on. Its methods
// may be called on a nil *Handoff (no --handoff) where noted.
type Handoff struct {
	path    string
	version string
	log     *slog.Logger

	prev      *net.UnixConn // predecessor, until complete or abort
	prevPID   int
	inherited map[string]net.Listener
	state     *state.File // the predecessor's, nil if none or unusable

	// adminKey is the admin socket's key: its address in the config the
	// process started with (admin.listen changes apply on restart only).
	adminKey string

	mu       sync.Mutex
	ln       *net.UnixListener
	stopped  bool
	pending  chan struct{} // closed when the exchange in progress ends
	tookOver bool          // a successor answered "ok"
}

// Inherit connects to the process serving path, if any, and receives its
// listening sockets and state. No process there (no socket file, or a stale
// one) is not an error: the caller binds afresh. version is this process's,
// announced to a successor later.
func Inherit(path, version string, log *slog.Logger) (*Handoff, error) {
	h := &Handoff{path: path, version: version, log: log, inherited: map[string]net.Listener{}}
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			log.Info("handoff: no running holdfast to take over from; binding afresh", "path", path)
			return h, nil
		}
		return nil, fmt.Errorf("handoff %s: %w", path, err)
	}
	uc := c.(*net.UnixConn)
	hello, files, err := readHello(uc)
	if err != nil {
		_ = uc.Close()
		return nil, fmt.Errorf("handoff %s: %w", path, err)
	}
	for i, s := range hello.Sockets {
		ln, err := net.FileListener(files[i])
		_ = files[i].Close() // FileListener holds its own duplicate
		if err != nil {
			for _, l := range h.inherited {
				_ = l.Close()
			}
			for _, f := range files[i+1:] {
				_ = f.Close()
			}
			_ = uc.Close()
			return nil, fmt.Errorf("handoff %s: socket %s: %w", path, s.Key, err)
		}
		if dup := h.inherited[s.Key]; dup != nil {
			_ = dup.Close()
		}
		h.inherited[s.Key] = ln
	}
	h.prev, h.prevPID = uc, hello.PID
	if len(hello.State) > 0 {
		// Validated as a state file is: a bad document is ignored, never
		// a failed upgrade.
		st, err := state.Parse(hello.State)
		if err != nil {
			log.Warn("handoff: state from the previous process ignored", "err", err)
		} else {
			h.state = st
		}
	}
	log.Info("handoff: inherited listening sockets", "from_pid", hello.PID, "from_version", hello.Version,
		"sockets", len(hello.Sockets), "state", h.state != nil)
	return h, nil
}

// Inherited are the sockets received, by key (app.Options.Inherited).
func (h *Handoff) Inherited() map[string]net.Listener { return h.inherited }

// State is the state the predecessor handed over (app.Options.State), nil
// when there was none or it was unusable.
func (h *Handoff) State() *state.File { return h.state }

func readHello(uc *net.UnixConn) (*helloMsg, []*os.File, error) {
	_ = uc.SetDeadline(time.Now().Add(handoffTimeout))
	defer func() { _ = uc.SetDeadline(time.Time{}) }()
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*maxHandoffFDs))
	n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, nil, err
	}
	var files []*os.File
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return nil, nil, err
		}
		for _, m := range msgs {
			fds, err := unix.ParseUnixRights(&m)
			if err != nil {
				continue
			}
			for _, fd := range fds {
				files = append(files, os.NewFile(uintptr(fd), "handoff"))
			}
		}
	}
	closeAll := func() {
		for _, f := range files {
			_ = f.Close()
		}
	}
	if n < 4 {
		closeAll()
		return nil, nil, errors.New("short hello")
	}
	size := int(binary.BigEndian.Uint32(buf[:4]))
	if size > maxHello {
		closeAll()
		return nil, nil, fmt.Errorf("hello of %d bytes is too large", size)
	}
	if 4+size > len(buf) {
		nb := make([]byte, 4+size)
		copy(nb, buf[:n])
		buf = nb
	}
	if n-4 < size {
		if _, err := io.ReadFull(uc, buf[n:4+size]); err != nil {
			closeAll()
			return nil, nil, err
		}
	}
	var hello helloMsg
	if err := json.Unmarshal(buf[4:4+size], &hello); err != nil {
		closeAll()
		return nil, nil, err
	}
	if len(files) != len(hello.Sockets) {
		closeAll()
		return nil, nil, fmt.Errorf("hello names %d sockets but carries %d descriptors", len(hello.Sockets), len(files))
	}
	return &hello, files, nil
}

// Abort gives up a takeover (the new process could not start): the
// predecessor sees the connection close and keeps serving.
func (h *Handoff) Abort() {
	if h.prev != nil {
		_ = h.prev.Close()
		h.prev = nil
	}
	for k, ln := range h.inherited {
		_ = ln.Close()
		delete(h.inherited, k)
	}
}

// Complete runs once a is serving: it closes inherited sockets the config
// did not claim, takes over path for the next successor, and tells the
// predecessor to drain. adminKey is the key a's admin socket is handed on
// under (app.AdminKey). The returned channel is closed when a successor
// has taken over from this process.
func (h *Handoff) Complete(a Server, adminKey string) (<-chan struct{}, error) {
	if n := a.CloseUnusedInherited(); n > 0 {
		h.log.Info("handoff: closed inherited sockets the config no longer names", "count", n)
	}
	h.inherited = nil
	h.state = nil
	h.adminKey = adminKey
	takeover := make(chan struct{})
	ln, err := listenReplacing(h.path)
	if err == nil {
		h.mu.Lock()
		h.ln = ln
		h.mu.Unlock()
		go h.serveSuccessors(a, ln, takeover)
	}
	if h.prev != nil {
		_ = h.prev.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, werr := h.prev.Write([]byte("ok\n")); werr != nil {
			h.log.Error("handoff: could not tell the previous process to drain; stop it with SIGTERM", "pid", h.prevPID, "err", werr)
		} else {
			h.log.Info("handoff: serving; previous process drains", "pid", h.prevPID)
		}
		_ = h.prev.Close()
		h.prev = nil
	}
	if err != nil {
		return nil, fmt.Errorf("handoff: listen %s: %w", h.path, err)
	}
	return takeover, nil
}

// listenReplacing binds a unix socket beside path and renames it over path,
// so a successor connecting at any moment reaches either the old process or
// this one, never nothing.
func listenReplacing(path string) (*net.UnixListener, error) {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+"."+strconv.Itoa(os.Getpid()))
	_ = os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, err
	}
	// Whoever connects gets the listening sockets: owner only.
	if err := os.Chmod(tmp, 0o600); err != nil {
		_ = ln.Close()
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = ln.Close()
		return nil, err
	}
	// Close must not unlink path: by then it may be a successor's.
	ln.SetUnlinkOnClose(false)
	return ln, nil
}

// SuccessorServing reports whether a successor has taken over. If the
// sockets were just sent to one, it waits up to wait for its answer: a
// SIGTERM sent as soon as the new process logs that it serves may arrive
// before that answer is read.
func (h *Handoff) SuccessorServing(wait time.Duration) bool {
	if h == nil {
		return false
	}
	h.mu.Lock()
	p := h.pending
	h.mu.Unlock()
	if p != nil {
		t := time.NewTimer(wait)
		select {
		case <-p:
		case <-t.C:
		}
		t.Stop()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tookOver
}

// Stop stops serving successors (this process drains for another reason).
func (h *Handoff) Stop() {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
	if h.ln != nil {
		_ = h.ln.Close()
	}
}

// serveSuccessors hands the sockets to each process that asks, one at a
// time, until one answers "ok"; then it closes takeover.
func (h *Handoff) serveSuccessors(a Server, ln *net.UnixListener, takeover chan<- struct{}) {
	defer ln.Close()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			h.mu.Lock()
			stopped := h.stopped
			h.mu.Unlock()
			if !stopped {
				h.log.Error("handoff: accept failed; no more takeovers", "err", err)
			}
			return
		}
		if err := samePeer(c); err != nil {
			h.log.Warn("handoff: refused", "err", err)
			_ = c.Close()
			continue
		}
		ok, err := h.handTo(a, c)
		_ = c.Close()
		if err != nil {
			h.log.Warn("handoff: successor did not take over; still serving", "err", err)
			continue
		}
		if ok {
			close(takeover)
			return
		}
	}
}

// samePeer checks that the connecting process runs as this one's user (or
// root): the socket file's mode already says so, this holds even if the
// directory or mode were set carelessly.
func samePeer(c *net.UnixConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return cerr
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Getuid() {
		return fmt.Errorf("pid %d runs as uid %d, not %d", cred.Pid, cred.Uid, os.Getuid())
	}
	return nil
}

// handTo sends the sockets to one successor and waits for its answer.
func (h *Handoff) handTo(a Server, c *net.UnixConn) (ok bool, err error) {
	done := make(chan struct{})
	h.mu.Lock()
	h.pending = done
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.tookOver = ok
		h.pending = nil
		h.mu.Unlock()
		close(done)
	}()
	hello := helloMsg{PID: os.Getpid(), Version: h.version}
	if st := a.State(); st != nil {
		b, err := json.Marshal(st)
		if err != nil {
			return false, fmt.Errorf("state: %w", err)
		}
		if len(b) <= state.MaxSize {
			hello.State = b
		} else {
			h.log.Warn("handoff: state too large to hand over; the successor starts without it", "bytes", len(b))
		}
	}
	var lns []net.Listener
	for addr, ln := range a.Listeners() {
		hello.Sockets = append(hello.Sockets, socket{Key: addr, Bound: ln.Addr().String()})
		lns = append(lns, ln)
	}
	if adm := a.AdminListener(); adm != nil {
		hello.Sockets = append(hello.Sockets, socket{Key: h.adminKey, Bound: adm.Addr().String()})
		lns = append(lns, adm)
	}
	if len(lns) > maxHandoffFDs {
		return false, fmt.Errorf("%d sockets: more than one message can carry", len(lns))
	}
	// Duplicates, taken while each socket is certainly open, so a listener
	// a reload closes meanwhile cannot turn into someone else's descriptor.
	// (os.File.Fd would also work but switches the shared socket to
	// blocking mode, under this process's own poller.)
	fds := make([]int, 0, len(lns))
	defer func() {
		for _, fd := range fds {
			_ = unix.Close(fd)
		}
	}()
	for i, ln := range lns {
		sc, ok := ln.(syscall.Conn)
		if !ok {
			return false, fmt.Errorf("socket %s cannot be handed over", hello.Sockets[i].Key)
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			return false, err
		}
		var derr error
		if err := rc.Control(func(fd uintptr) {
			var nfd int
			nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
			if derr == nil {
				fds = append(fds, nfd)
			}
		}); err != nil {
			return false, err
		}
		if derr != nil {
			return false, derr
		}
	}
	body, err := json.Marshal(hello)
	if err != nil {
		return false, err
	}
	msg := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	msg = append(msg, body...)
	_ = c.SetDeadline(time.Now().Add(handoffTimeout))
	if _, _, err := c.WriteMsgUnix(msg, unix.UnixRights(fds...), nil); err != nil {
		return false, err
	}
	h.log.Info("handoff: sockets sent to a new process; waiting for it to serve", "sockets", len(fds))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			return false, errors.New("the new process closed the connection before serving")
		}
		return false, err
	}
	if line != "ok\n" {
		return false, fmt.Errorf("unexpected answer %q", line)
	}
	return true, nil
}
