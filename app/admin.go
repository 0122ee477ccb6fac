package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/holdfast-lb/holdfast/admin"
	"github.com/holdfast-lb/holdfast/config"
)

type adminServer struct {
	ln  net.Listener
	h   *admin.Handler
	srv *http.Server
}

// adminSettings reads what the admin endpoints need from cfg: the token
// file is read here, at start and on each reload, so a rotated token
// applies with a reload and a bad one fails it.
func adminSettings(cfg *config.Config) (admin.Settings, error) {
	s := admin.Settings{Pprof: cfg.Admin.Pprof}
	if cfg.Admin.TokenFile != "" {
		tok, err := config.ReadToken(cfg.Admin.TokenFile)
		if err != nil {
			return s, fmt.Errorf("admin.token_file: %w", err)
		}
		s.Token = tok
	}
	return s, nil
}

func (a *App) startAdmin(cfg *config.Config) (*adminServer, error) {
	set, err := adminSettings(cfg)
	if err != nil {
		return nil, err
	}
	ln, err := a.listenAdmin(cfg.Admin.Listen)
	if err != nil {
		return nil, fmt.Errorf("admin listener: %w", err)
	}
	h := admin.New(a, a.reg, set)
	s := &adminServer{ln: ln, h: h, srv: admin.NewServer(h, a.opts.AdminTimeouts)}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("admin listener stopped", "err", err)
		}
	}()
	a.log.Info("admin listening", "addr", ln.Addr().String(), "token", set.Token != "", "pprof", set.Pprof)
	return s, nil
}

func (s *adminServer) addr() net.Addr { return s.ln.Addr() }

func (s *adminServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
}
