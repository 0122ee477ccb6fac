package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/holdfast-lb/holdfast/admin"
)

type adminServer struct {
	ln  net.Listener
	srv *http.Server
}

func (a *App) startAdmin(addr string) (*adminServer, error) {
	ln, err := a.listenAdmin(addr)
	if err != nil {
		return nil, fmt.Errorf("admin listener: %w", err)
	}
	s := &adminServer{ln: ln, srv: &http.Server{
		Handler:           admin.Handler(a, a.reg),
		ReadHeaderTimeout: 5 * time.Second,
	}}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("admin listener stopped", "err", err)
		}
	}()
	a.log.Info("admin listening", "addr", ln.Addr().String())
	return s, nil
}

func (s *adminServer) addr() net.Addr { return s.ln.Addr() }

func (s *adminServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
}
