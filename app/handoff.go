package app

import (
	"context"
	"net"
)

// AdminKey is the Options.Inherited key of an inherited admin socket for
// addr, kept apart from traffic listeners, which are keyed by address alone.
func AdminKey(addr string) string { return "admin " + addr }

// listenAdmin binds the admin socket, or takes the one a previous process
// handed over for the same address.
func (a *App) listenAdmin(addr string) (net.Listener, error) {
	if ln, ok := a.opts.Inherited[AdminKey(addr)]; ok {
		delete(a.opts.Inherited, AdminKey(addr))
		return ln, nil
	}
	return net.Listen("tcp", addr)
}

// AdminListener is the raw admin socket, for handing over to a new process.
func (a *App) AdminListener() net.Listener {
	if a.admin == nil {
		return nil
	}
	return a.admin.ln
}

// CloseUnusedInherited closes the inherited sockets that the config did not
// claim (a listener the new config dropped): nobody would accept from them,
// and the kernel would keep queueing connections that no one answers.
// It returns how many it closed.
func (a *App) CloseUnusedInherited() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for k, ln := range a.opts.Inherited {
		_ = ln.Close()
		delete(a.opts.Inherited, k)
		n++
	}
	return n
}

// HandOver drains after a new process has taken over the listening
// sockets. Unlike Shutdown alone, the admin socket stops accepting first
// (the successor answers /readyz on the same socket, so nobody sees this
// process's 503) and drain_delay is skipped: the sockets stay open in the
// successor, so there is nothing for an outer balancer to move away from.
// This process closes only its own copies of the sockets; connections
// queued in the kernel are accepted by the successor. In-flight requests
// finish as in Shutdown.
func (a *App) HandOver(ctx context.Context) {
	a.handedOver.Store(true)
	if a.admin != nil {
		// Shutdown closes the listener at once, then waits for open admin
		// requests; do not hold up the drain for them.
		go a.admin.close()
	}
	a.Shutdown(ctx)
}
