package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Lookup results, the values of the `result` label of
// holdfast_discovery_lookups_total.
const (
	ResultOK        = "ok"
	ResultServfail  = "servfail"
	ResultRefused   = "refused"
	ResultTimeout   = "timeout"
	ResultNXDomain  = "nxdomain"
	ResultEmpty     = "empty"
	ResultTruncated = "truncated"
	ResultError     = "error"
)

// Results lists every lookup result, for metrics that pre-create their series.
var Results = []string{ResultOK, ResultServfail, ResultRefused, ResultTimeout, ResultNXDomain, ResultEmpty, ResultTruncated, ResultError}

// UDPSize is the EDNS0 buffer size advertised on every query: large enough
// for a few hundred A records, and anything larger comes back truncated and
// is retried over TCP.
const UDPSize = 4096

// LookupError is a failed or destructive DNS answer, classified.
type LookupError struct {
	Name   string // the name asked
	Type   string // "SRV", "A", "AAAA"
	Server string // the last server asked, "" if none
	Result string // one of the Result constants, never ResultOK
	Err    error  // the underlying error, if any
}

func (e *LookupError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "dns %s %s", e.Type, e.Name)
	if e.Server != "" {
		fmt.Fprintf(&b, " via %s", e.Server)
	}
	b.WriteString(": ")
	b.WriteString(e.Result)
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *LookupError) Unwrap() error { return e.Err }

// ResultOf classifies err as a lookup result: nil is ResultOK, a
// *LookupError carries its own, a context deadline is ResultTimeout and
// anything else ResultError.
func ResultOf(err error) string {
	if err == nil {
		return ResultOK
	}
	var le *LookupError
	if errors.As(err, &le) {
		return le.Result
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return ResultTimeout
	}
	return ResultError
}

// destructive reports whether result is an answer that says there are no
// backends (as opposed to a failure to get an answer).
func destructive(result string) bool {
	return result == ResultNXDomain || result == ResultEmpty
}

// ServerObserver may be implemented by an Observer to learn the result of
// every query to every server, including those hidden by failover (a primary
// answering SERVFAIL while the secondary covers for it).
type ServerObserver interface {
	ServerResult(server, result string)
}

// SystemServers returns the nameservers of /etc/resolv.conf as host:port.
func SystemServers() ([]string, error) {
	return serversFromFile("/etc/resolv.conf")
}

func serversFromFile(path string) ([]string, error) {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("read nameservers: %w", err)
	}
	if len(cc.Servers) == 0 {
		return nil, fmt.Errorf("read nameservers: no nameserver in %s", path)
	}
	port := cc.Port
	if port == "" {
		port = "53"
	}
	out := make([]string, 0, len(cc.Servers))
	for _, s := range cc.Servers {
		out = append(out, net.JoinHostPort(s, port))
	}
	return out, nil
}

// Resolver asks DNS servers in order with github.com/miekg/dns, failing over
// to the next server on SERVFAIL, REFUSED, a timeout, a malformed reply or a
// truncated answer that TCP cannot complete. Every query carries EDNS0 with a
// UDPSize buffer; a truncated UDP answer is asked again over TCP from the same
// server. Attempts are made in rounds: every server once, in order, then
// again, Attempts rounds in all, so a dead primary does not hold a lookup
// for Attempts timeouts before the secondary is asked.
//
// A Resolver is safe for concurrent use.
type Resolver struct {
	// Name labels the resolver in logs.
	Name string
	// Servers are host:port, asked in order.
	Servers []string
	// Timeout bounds one query to one server (default 1s).
	Timeout time.Duration
	// Attempts is how many times each server is asked (default 2).
	Attempts int
	// Log receives a warning when a server starts failing and a note when it
	// recovers; nil discards.
	Log *slog.Logger
	// Observer, if set, learns every server's result.
	Observer ServerObserver

	mu      sync.Mutex
	servers map[string]*serverState
}

type serverState struct {
	failing bool
	okRun   int
}

// serverRecoverAfter is how many good answers in a row mark a failing server
// healthy again, so a server failing two queries in three logs once, not on
// every lookup.
const serverRecoverAfter = 3

// NewResolver returns a Resolver with defaults filled in.
func NewResolver(name string, servers []string, timeout time.Duration, attempts int, log *slog.Logger) *Resolver {
	return &Resolver{Name: name, Servers: servers, Timeout: timeout, Attempts: attempts, Log: log}
}

// Query asks for name and qtype and returns the first usable reply: NOERROR
// (possibly with no records of qtype) or NXDOMAIN. Any other outcome from
// every server on every attempt is a *LookupError classified by the last
// failure. Cancelling ctx stops at once with ctx's error.
func (r *Resolver) Query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	name = dns.Fqdn(name)
	le := &LookupError{Name: name, Type: dns.TypeToString[qtype], Result: ResultError}
	if len(r.Servers) == 0 {
		le.Err = errors.New("no DNS servers configured")
		return nil, le
	}
	attempts := r.Attempts
	if attempts < 1 {
		attempts = 2
	}
	for range attempts {
		for _, server := range r.Servers {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			reply, result, err := r.exchange(ctx, server, name, qtype)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			r.note(server, name, result, err)
			if result == ResultOK || result == ResultNXDomain || result == ResultEmpty {
				return reply, nil
			}
			le.Server, le.Result, le.Err = server, result, err
		}
	}
	return nil, le
}

// exchange asks one server once: UDP first, TCP when the UDP answer is
// truncated.
func (r *Resolver) exchange(ctx context.Context, server, name string, qtype uint16) (*dns.Msg, string, error) {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = time.Second
	}
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.RecursionDesired = true
	q.SetEdns0(UDPSize, false)

	c := &dns.Client{Net: "udp", Timeout: timeout, UDPSize: UDPSize}
	reply, err := exchangeOnce(ctx, c, q, server)
	if err == nil && reply != nil && reply.Truncated {
		c.Net = "tcp"
		reply, err = exchangeOnce(ctx, c, q, server)
		if err != nil {
			return nil, ResultTruncated, fmt.Errorf("truncated over UDP, TCP failed: %w", err)
		}
		if reply.Truncated {
			return nil, ResultTruncated, errors.New("truncated over TCP")
		}
	}
	if err != nil {
		return nil, classifyNetErr(err), err
	}
	result, err := classifyReply(q, reply)
	return reply, result, err
}

// exchangeOnce is Client.ExchangeContext that also stops when ctx is
// cancelled (miekg/dns only honours a context's deadline once connected).
func exchangeOnce(ctx context.Context, c *dns.Client, q *dns.Msg, server string) (*dns.Msg, error) {
	conn, err := c.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	reply, _, err := c.ExchangeWithConnContext(ctx, q, conn)
	return reply, err
}

func classifyNetErr(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return ResultTimeout
	}
	return ResultError
}

// classifyReply checks that reply answers q and classifies it. Only replies
// classified ok, nxdomain or empty are usable.
func classifyReply(q, reply *dns.Msg) (string, error) {
	if reply == nil {
		return ResultError, errors.New("no reply")
	}
	if !reply.Response {
		return ResultError, errors.New("malformed reply: not a response")
	}
	if len(reply.Question) != 1 || len(q.Question) != 1 ||
		!strings.EqualFold(reply.Question[0].Name, q.Question[0].Name) ||
		reply.Question[0].Qtype != q.Question[0].Qtype {
		return ResultError, errors.New("malformed reply: question does not match")
	}
	if reply.Truncated {
		return ResultTruncated, errors.New("truncated reply")
	}
	switch reply.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return ResultNXDomain, nil
	case dns.RcodeServerFailure:
		return ResultServfail, errors.New("SERVFAIL")
	case dns.RcodeRefused:
		return ResultRefused, errors.New("REFUSED")
	default:
		return ResultError, fmt.Errorf("rcode %s", dns.RcodeToString[reply.Rcode])
	}
	if len(records(reply, q.Question[0].Name, q.Question[0].Qtype)) == 0 {
		return ResultEmpty, nil
	}
	return ResultOK, nil
}

// records returns the answer records of qtype owned by name or by a name
// name is a CNAME (chain) for.
func records(reply *dns.Msg, name string, qtype uint16) []dns.RR {
	owners := map[string]bool{dns.CanonicalName(name): true}
	// Follow CNAMEs in answer order; bounded by the answer's length.
	for range len(reply.Answer) {
		grew := false
		for _, rr := range reply.Answer {
			if c, ok := rr.(*dns.CNAME); ok && owners[dns.CanonicalName(c.Hdr.Name)] && !owners[dns.CanonicalName(c.Target)] {
				owners[dns.CanonicalName(c.Target)] = true
				grew = true
			}
		}
		if !grew {
			break
		}
	}
	var out []dns.RR
	for _, rr := range reply.Answer {
		h := rr.Header()
		if h.Rrtype == qtype && owners[dns.CanonicalName(h.Name)] {
			out = append(out, rr)
		}
	}
	return out
}

// note logs a server's change of state, once per change.
func (r *Resolver) note(server, name, result string, err error) {
	if r.Observer != nil {
		r.Observer.ServerResult(server, result)
	}
	good := result == ResultOK || result == ResultNXDomain || result == ResultEmpty
	r.mu.Lock()
	if r.servers == nil {
		r.servers = map[string]*serverState{}
	}
	st := r.servers[server]
	if st == nil {
		st = &serverState{}
		r.servers[server] = st
	}
	var logFail, logRecover bool
	switch {
	case !good:
		st.okRun = 0
		logFail = !st.failing
		st.failing = true
	case st.failing:
		st.okRun++
		if st.okRun >= serverRecoverAfter {
			st.failing = false
			logRecover = true
		}
	}
	r.mu.Unlock()
	if r.Log == nil {
		return
	}
	switch {
	case logFail:
		r.Log.Warn("DNS server failing; asking the next one", "resolver", r.Name, "server", server, "name", name, "result", result, "err", err)
	case logRecover:
		r.Log.Info("DNS server answering again", "resolver", r.Name, "server", server)
	}
}
