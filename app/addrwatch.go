package app

import (
	"net/netip"

	"github.com/holdfast-lb/holdfast/hostaddr"
)

// startAddrWatch follows the host's addresses for the HTTP listeners bound
// to a specific IP (a floating IP, typically with freebind). When such an
// address leaves the host while holdfast keeps running (keepalived moved
// it by priority), the listener's keep-alive connections would keep
// leading clients here, to a node the address no longer routes to: the
// idle ones are closed at once and the busy ones get their response with
// Connection: close, so clients reconnect to wherever the address went
// (proxy.HTTP.SetAddressLost says why later connections keep alive).
// When the address comes back, nothing changes. Listeners on the
// wildcard address are not affected; TCP listeners neither (their
// connections are streams, not requests that can be retried).
func (a *App) startAddrWatch() {
	src := a.opts.Addresses
	if src == nil {
		src = &hostaddr.Netlink{Log: a.log}
	}
	var tr hostaddr.Tracker // the source's goroutine only
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := src.Run(a.ctx, func(s hostaddr.Set) { a.addressesChanged(&tr, s) }); err != nil {
			a.log.Warn("host addresses not watched; keep-alive connections ignore a floating IP moving away", "err", err)
		}
	}()
}

// addressesChanged applies one set of host addresses to the listeners.
func (a *App) addressesChanged(tr *hostaddr.Tracker, s hostaddr.Set) {
	type watchedListener struct {
		name, listen string
		rt           *listenerRT
	}
	byIP := map[netip.Addr][]watchedListener{}
	var ips []netip.Addr
	a.mu.Lock()
	for name, rt := range a.listeners {
		ip, ok := hostaddr.Watched(rt.cfg.Listen)
		if !ok || rt.http == nil {
			continue
		}
		if byIP[ip] == nil {
			ips = append(ips, ip)
		}
		byIP[ip] = append(byIP[ip], watchedListener{name, rt.cfg.Listen, rt})
	}
	a.mu.Unlock()
	left, back := tr.Update(ips, s)
	for _, ip := range left {
		for _, l := range byIP[ip] {
			l.rt.http.SetAddressLost(true)
			n := l.rt.ln.EndKeepAlive()
			a.log.Warn("listener address left this host; closing its keep-alive connections",
				"listener", l.name, "address", l.listen, "idle_closed", n)
		}
	}
	for _, ip := range back {
		for _, l := range byIP[ip] {
			l.rt.http.SetAddressLost(false)
			a.log.Info("listener address back on this host", "listener", l.name, "address", l.listen)
		}
	}
}
