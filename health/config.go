package health

import (
	"fmt"

	"github.com/holdfast-lb/holdfast/config"
)

// PolicyFrom builds a Tracker policy from a pool's validated health and
// outlier settings.
func PolicyFrom(h config.Health, o config.Outlier) Policy {
	return Policy{
		Rise:                h.Rise,
		Fall:                h.Fall,
		FlapWindow:          h.Flap.Window.D(),
		MaxTransitions:      h.Flap.MaxTransitions,
		Hold:                h.Flap.Hold.D(),
		MaxHold:             h.Flap.MaxHold.D(),
		ConsecutiveFailures: o.ConsecutiveFailures,
		Ejection:            o.Ejection.D(),
		MaxEjection:         o.MaxEjection.D(),
	}
}

// CheckerFrom builds the active checker for a pool's health settings: an
// HTTPChecker for "http", a TCPChecker for "tcp", and nil for "none" (no
// active checks; the backend's Tracker then sees only live-traffic signals).
// host is the Host header for HTTP checks ("" sends the backend address).
func CheckerFrom(h config.Health, host string) (Checker, error) {
	switch h.Type {
	case "http":
		expect, err := config.ParseStatusRanges(h.ExpectStatus)
		if err != nil {
			return nil, fmt.Errorf("health.expect_status: %w", err)
		}
		return NewHTTPChecker(h.Path, expect, host), nil
	case "tcp":
		return NewTCPChecker(), nil
	case "grpc":
		return NewGRPCCheck(GRPCCheck{Service: h.Service, Port: h.Port}), nil
	case "none":
		return nil, nil
	}
	return nil, fmt.Errorf("health.type: unknown health type %q", h.Type)
}
