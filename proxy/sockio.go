package proxy

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// sockIO reads and writes a TCP socket with recvfrom and sendto rather than
// read and write: the socket calls skip the VFS layer (fdget_pos, vfs_read,
// vfs_write, sock_*_iter), about 5% of the kernel's time per proxied
// request in a perf profile under wrk. The sockets are non-blocking, so
// the calls never block and are made with RawSyscall6, without the
// scheduler's entersyscall/exitsyscall (about 75 ns a call, 6 calls per
// proxied request). The callbacks handed to RawConn are
// method values made once per connection, so a call allocates nothing.
//
// One goroutine may read while another writes; reads must not run
// concurrently with reads, nor writes with writes (net.Conn callers do not
// interleave them either). The fields are kept small: every idle client
// connection, parked or not, holds one sockIO.
type sockIO struct {
	rc syscall.RawConn
	tc *net.TCPConn // the socket's conn: addresses for errors, deadlines
	// dl, when set, keeps the deadlines lazily: a deadline that fires
	// early is re-armed and the call goes on (see lazyDeadlines).
	dl      *lazyDeadlines
	readFn  func(uintptr) bool // doRead: a read, a peek or a send and read (mode)
	writeFn func(uintptr) bool

	rbuf []byte
	rn   int32 // a socket read is far below 2 GiB
	rerr int32 // errno

	wbuf []byte
	wn   int
	werr int32 // errno

	peek     [1]byte
	mode     uint8 // what readFn does: modeRead, modePeek, modeSend
	peekOpen bool
}

const (
	modeRead uint8 = iota
	modePeek       // peerClosed
	modeSend       // sendRead: wbuf first, then the read
)

// init prepares c for direct socket calls; false leaves c's own Read and
// Write in use (not a socket, or TLS and the like).
func (s *sockIO) init(c net.Conn) bool {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	s.rc, s.tc = rc, tc
	s.readFn, s.writeFn = s.doRead, s.doWrite
	return true
}

// peerClosed reports whether the peer closed the connection while it sat
// idle in a pool: a non-blocking peek sees EOF, an error or bytes nobody
// asked for (anything but EAGAIN). Before sending a non-idempotent request
// on a reused connection, so a dead one is never taken for a backend that
// saw the request.
func (s *sockIO) peerClosed() bool {
	s.mode = modePeek
	err := s.rc.Read(s.readFn)
	s.mode = modeRead
	return err != nil || !s.peekOpen
}

func (s *sockIO) doPeek(fd uintptr) bool {
	_, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd,
		uintptr(unsafe.Pointer(&s.peek[0])), 1, syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	if e == syscall.EINTR {
		return s.doPeek(fd)
	}
	s.peekOpen = e == syscall.EAGAIN
	return true
}

func (s *sockIO) doRead(fd uintptr) bool {
	switch s.mode {
	case modePeek:
		return s.doPeek(fd)
	case modeSend:
		s.mode = modeRead
		if done := s.doWrite(fd); !done || s.werr != 0 {
			return true // sendRead finishes the write, or reports its error
		}
		return false // sent: wait for the answer; no read is tried before it
	}
	for {
		n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd,
			uintptr(unsafe.Pointer(&s.rbuf[0])), uintptr(len(s.rbuf)), 0, 0, 0)
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait until readable
		}
		s.rn, s.rerr = int32(n), int32(e)
		return true
	}
}

func (s *sockIO) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.rbuf = p
	err := s.rc.Read(s.readFn)
	for s.again(true, &err) {
		err = s.rc.Read(s.readFn)
	}
	s.rbuf = nil
	return s.readResult(err)
}

// readResult is what a read that ended with err (from RawConn.Read) gave.
func (s *sockIO) readResult(err error) (int, error) {
	if err != nil {
		return 0, s.opError("read", err)
	}
	if s.rerr != 0 {
		return 0, s.opError("read", os.NewSyscallError("recvfrom", syscall.Errno(s.rerr)))
	}
	if s.rn == 0 {
		return 0, io.EOF
	}
	return int(s.rn), nil
}

// sendRead sends w, then reads into p, as one RawConn.Read: the wait for
// the answer is armed before w goes out, so no read is tried before the
// answer can be there. (A read right after a send finds nothing yet: an
// EAGAIN recvfrom per request, which a RawConn.Read must otherwise try
// first, since the netpoller forgets readiness from before the wait.)
// When w cannot all go out without waiting (the send buffer is full), the
// rest is written the ordinary way first. sent is how much of w went out.
func (s *sockIO) sendRead(w, p []byte) (sent, n int, err error) {
	s.wbuf, s.wn, s.werr = w, 0, 0
	s.rbuf, s.rn, s.rerr = p, 0, 0
	s.mode = modeSend
	err = s.rc.Read(s.readFn)
	s.mode = modeRead
	sent, s.wbuf, s.rbuf = s.wn, nil, nil
	if err == nil && s.werr != 0 {
		return sent, 0, s.opError("write", os.NewSyscallError("sendto", syscall.Errno(s.werr)))
	}
	if err == nil && sent < len(w) {
		m, err := s.write(w[sent:])
		if sent += m; err != nil {
			return sent, 0, err
		}
		n, err = s.read(p)
		return sent, n, err
	}
	n, err = s.readResult(err)
	return sent, n, err
}

func (s *sockIO) doWrite(fd uintptr) bool {
	for s.wn < len(s.wbuf) {
		n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd,
			uintptr(unsafe.Pointer(&s.wbuf[s.wn])), uintptr(len(s.wbuf)-s.wn), syscall.MSG_NOSIGNAL, 0, 0)
		switch e {
		case 0:
			s.wn += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // wait until writable, then go on
		default:
			s.werr = int32(e)
			return true
		}
	}
	return true
}

func (s *sockIO) write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.wbuf, s.wn, s.werr = p, 0, 0
	err := s.rc.Write(s.writeFn)
	for s.again(false, &err) {
		err = s.rc.Write(s.writeFn) // goes on from s.wn
	}
	n := s.wn
	s.wbuf = nil
	if err != nil {
		return n, s.opError("write", err)
	}
	if s.werr != 0 {
		return n, s.opError("write", os.NewSyscallError("sendto", syscall.Errno(s.werr)))
	}
	return n, nil
}

// again reports whether a call that failed with *err is to be retried:
// the socket's deadline fired before the one asked for (lazyDeadlines),
// and has been re-armed. A failure to re-arm replaces *err.
func (s *sockIO) again(read bool, err *error) bool {
	if *err == nil || !timedOut(*err) {
		return false
	}
	again, aerr := s.dl.early(s.tc, read)
	if aerr != nil {
		*err = aerr
		return false
	}
	return again
}

// opError wraps err as the net package does, so callers see the usual
// *net.OpError (Timeout, errors.Is(err, net.ErrClosed), syscall errnos).
func (s *sockIO) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: s.tc.LocalAddr(), Addr: s.tc.RemoteAddr(), Err: err}
}
