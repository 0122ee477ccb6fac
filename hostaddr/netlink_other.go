//go:build !linux

package hostaddr

import (
	"context"
	"errors"
	"log/slog"
)

// Netlink is Linux only; elsewhere Run reports that it cannot watch.
type Netlink struct {
	Log *slog.Logger
}

// Run implements Source.
func (n *Netlink) Run(ctx context.Context, update func(Set)) error {
	return errors.New("address events need Linux netlink")
}
