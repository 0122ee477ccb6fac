package proxy

import (
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/balancer"
)

// RateLimit is a route's token bucket per key: Rate requests a second on
// average, bursts of up to Burst. Key is "client_ip" or "header:NAME"
// (a request without the header is keyed by its client IP).
type RateLimit struct {
	Rate  float64
	Burst int
	Key   string
	// MaxKeys bounds the buckets kept (memory); 0: DefaultRateLimitKeys.
	MaxKeys int
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time
}

// DefaultRateLimitKeys is how many keys a route's limiter tracks at once.
const DefaultRateLimitKeys = 16384

const (
	limitShards = 64 // a lock per shard: no global lock on the request path
	limitProbe  = 4  // slots a key may live in, from its hash
)

// limiter is a fixed-size table of token buckets: memory is bounded by
// MaxKeys (24 bytes a slot) whatever the number of distinct keys. A key
// lives in one of limitProbe slots of its shard; a slot whose bucket has
// refilled to Burst carries no state and is reused, and when all are busy
// the fullest bucket is evicted (its key starts again from a full
// bucket: under a flood of distinct keys the limit gets looser, never
// stricter, and memory does not grow). Safe for concurrent use.
type limiter struct {
	conf    RateLimit // as configured (Now aside): what a reload compares
	perNs   float64   // tokens per nanosecond
	burst   float64
	header  string // "" keys by client IP
	now     func() time.Time
	counter prometheus.Counter
	shards  [limitShards]limitShard
}

type limitShard struct {
	mu    sync.Mutex
	slots []limitSlot
	_     [40]byte // keep shards' locks on separate cache lines
}

type limitSlot struct {
	key    uint64 // 0: free
	tokens float64
	last   int64 // unix nanoseconds of the last update
}

func newLimiter(r *RateLimit, counter prometheus.Counter) *limiter {
	l := &limiter{conf: *r, perNs: r.Rate / 1e9, burst: float64(max(r.Burst, 1)), now: r.Now, counter: counter}
	l.conf.Now = nil
	if len(r.Key) > len("header:") && r.Key[:len("header:")] == "header:" {
		l.header = r.Key[len("header:"):]
	}
	if l.now == nil {
		l.now = time.Now
	}
	n := r.MaxKeys
	if n <= 0 {
		n = DefaultRateLimitKeys
	}
	per := max((n+limitShards-1)/limitShards, limitProbe)
	for i := range l.shards {
		l.shards[i].slots = make([]limitSlot, per)
	}
	return l
}

// key hashes the request's limit key; never 0.
func (l *limiter) key(ctx *fasthttp.RequestCtx) uint64 {
	var h uint64
	if l.header != "" {
		if v := ctx.Request.Header.Peek(l.header); len(v) > 0 {
			h = balancer.HashBytes(v) ^ 0x9e3779b97f4a7c15 // apart from IPs
		}
	}
	if h == 0 {
		h = balancer.HashBytes(ctx.RemoteIP())
	}
	if h == 0 {
		h = 1
	}
	return h
}

// allow takes a token for ctx's key. When none is left it returns false
// and the whole seconds until one is (at least 1), for Retry-After.
func (l *limiter) allow(ctx *fasthttp.RequestCtx) (bool, int) {
	k := l.key(ctx)
	now := l.now().UnixNano()
	s := &l.shards[k%limitShards]
	s.mu.Lock()
	slot := l.slot(s, k, now)
	ok := slot.tokens >= 1
	if ok {
		slot.tokens--
	}
	missing := 1 - slot.tokens
	s.mu.Unlock()
	if ok {
		return true, 0
	}
	if l.counter != nil {
		l.counter.Inc()
	}
	wait := math.Ceil(missing / l.perNs / 1e9)
	return false, int(max(1, min(wait, 86400)))
}

// slot finds or makes k's bucket, refilled to now. Under s.mu.
func (l *limiter) slot(s *limitShard, k uint64, now int64) *limitSlot {
	n := uint64(len(s.slots))
	start := (k / limitShards) % n
	var victim *limitSlot
	best := -1.0
	for i := uint64(0); i < limitProbe; i++ {
		c := &s.slots[(start+i)%n]
		if c.key == k {
			l.refill(c, now)
			return c
		}
		if c.key == 0 {
			if best < math.Inf(1) {
				victim, best = c, math.Inf(1)
			}
			continue
		}
		l.refill(c, now)
		if c.tokens > best {
			victim, best = c, c.tokens
		}
	}
	*victim = limitSlot{key: k, tokens: l.burst, last: now}
	return victim
}

func (l *limiter) refill(c *limitSlot, now int64) {
	if d := now - c.last; d > 0 {
		c.tokens = min(l.burst, c.tokens+float64(d)*l.perNs)
		c.last = now
	}
}

// carry is the limiter a reloaded route uses in place of fresh, given the
// route's limiter before the reload. The same rate, burst, key and size:
// old itself, buckets untouched. A new rate or burst with the same key and
// size: fresh, holding old's buckets as they stand now (refilled at the
// old rate up to this instant), each capped at the new burst, so a client
// that spent its burst does not get a new one from the reload, and a
// lowered burst applies at once. A changed key or size: fresh, empty.
func carry(fresh, old *limiter) *limiter {
	if old == nil {
		return fresh
	}
	f, o := fresh.conf, old.conf
	if f.Rate == o.Rate && f.Burst == o.Burst && f.Key == o.Key && f.MaxKeys == o.MaxKeys {
		return old
	}
	if fresh.conf.Key != old.conf.Key || len(fresh.shards[0].slots) != len(old.shards[0].slots) {
		return fresh
	}
	now := fresh.now().UnixNano()
	for i := range old.shards {
		o, n := &old.shards[i], &fresh.shards[i]
		o.mu.Lock()
		for j := range o.slots {
			c := o.slots[j]
			if c.key == 0 {
				continue
			}
			old.refill(&c, now)
			if c.tokens >= old.burst && c.tokens >= fresh.burst {
				continue // full: no state worth keeping
			}
			c.tokens = min(c.tokens, fresh.burst)
			c.last = max(c.last, now)
			n.slots[j] = c
		}
		o.mu.Unlock()
	}
	return fresh
}
