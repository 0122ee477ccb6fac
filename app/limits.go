package app

import (
	"syscall"

	"github.com/holdfast-lb/holdfast/config"
)

// descriptorLimit is the process's soft open-files limit, or 0 when it
// cannot be read or is unlimited.
func descriptorLimit() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur == ^uint64(0) { // RLIM_INFINITY
		return 0
	}
	return lim.Cur
}

// setConnCap sets the process-wide client connection cap for cfg (the
// pools' upstream reserve changes with it) and logs it when it changes.
func (a *App) setConnCap(cfg *config.Config) {
	n := config.ClientConnCap(cfg, a.nofile)
	if n == a.connCap.Max() {
		return
	}
	a.connCap.SetMax(n)
	a.log.Info("client connection cap", "max_connections", n, "open_files_limit", a.nofile,
		"reserved", config.ReservedDescriptors)
}
