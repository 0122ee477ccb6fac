//go:build linux

package hostaddr

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
)

// Netlink is the Source of the host's network namespace: the kernel's
// address events (RTM_NEWADDR/RTM_DELADDR, netlink.AddrSubscribe), on top
// of a full listing taken after subscribing, so no change between the two
// is missed. When the subscription breaks (a lost event: the socket
// buffer overflowed) it subscribes and lists again.
type Netlink struct {
	Log *slog.Logger
}

var _ Source = (*Netlink)(nil)

// resubscribeDelay spaces attempts to subscribe again after a failure.
const resubscribeDelay = time.Second

// Run implements Source.
func (n *Netlink) Run(ctx context.Context, update func(Set)) error {
	log := n.Log
	if log == nil {
		log = slog.Default()
	}
	first := true
	for ctx.Err() == nil {
		err := n.watch(ctx, update)
		if ctx.Err() != nil {
			return nil
		}
		if first && err != nil {
			return err // no netlink at all (a sandbox): nothing to watch
		}
		first = false
		log.Warn("address watch interrupted; subscribing again", "err", err)
		t := time.NewTimer(resubscribeDelay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
	return nil
}

// addrKey is an address on one interface: the same IP may be on several.
type addrKey struct {
	ip   netip.Addr
	link int
}

func (n *Netlink) watch(ctx context.Context, update func(Set)) error {
	ch := make(chan netlink.AddrUpdate, 256)
	done := make(chan struct{})
	defer close(done)
	errc := make(chan error, 1)
	opts := netlink.AddrSubscribeOptions{ErrorCallback: func(err error) {
		select {
		case errc <- err:
		default:
		}
	}}
	if err := netlink.AddrSubscribeWithOptions(ch, done, opts); err != nil {
		return fmt.Errorf("netlink address subscribe: %w", err)
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("netlink address list: %w", err)
	}
	held := map[addrKey]bool{}
	loop := map[int]bool{} // link index -> loopback
	isLoop := func(idx int) bool {
		if v, ok := loop[idx]; ok {
			return v
		}
		ifc, err := net.InterfaceByIndex(idx)
		// A link that vanished meanwhile holds nothing; count it as not
		// loopback so its deletion events still apply.
		v := err == nil && ifc.Flags&net.FlagLoopback != 0
		loop[idx] = v
		return v
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && !isLoop(a.LinkIndex) {
			held[addrKey{ip.Unmap(), a.LinkIndex}] = true
		}
	}
	push := func() {
		s := make(Set, len(held))
		for k := range held {
			s[k.ip] = struct{}{}
		}
		update(s)
	}
	push()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return err
		case u, ok := <-ch:
			if !ok {
				return fmt.Errorf("netlink address subscription closed")
			}
			ip, ok := netip.AddrFromSlice(u.LinkAddress.IP)
			if !ok || isLoop(u.LinkIndex) {
				continue
			}
			k := addrKey{ip.Unmap(), u.LinkIndex}
			if u.NewAddr == held[k] {
				continue
			}
			if u.NewAddr {
				held[k] = true
			} else {
				delete(held, k)
			}
			push()
		}
	}
}
