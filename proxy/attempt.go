package proxy

import (
	"errors"
	"net"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/balancer"
	"github.com/holdfast-lb/holdfast/metrics"
)

// One attempt loop serves HTTP requests, upgrades and TCP connections:
// pick a backend, try it, classify what happened, then retry on another
// backend, give up, or blame nobody. A retry rule, the queue and the
// budget are decided here once, for all three.

// stage is how far an attempt got, so the loop knows whether request bytes
// may have reached the backend and whom to blame.
type stage uint8

const (
	stageOK         stage = iota // the backend answered (or, for TCP, accepted)
	stageNoBackend               // no routable backend: 503
	stageConnect                 // no byte left holdfast: safe to retry any request
	stageQueue                   // every connection busy past queue_timeout: 503, nobody's fault
	stageLocal                   // holdfast itself ran out of something (descriptors, ports): 503, not the backend's fault
	stageClient                  // the client failed (its body ended early, stalled or was malformed): not the backend's fault
	stageWrite                   // sending failed before the backend could have the whole request
	stageRead                    // no complete response header arrived
	stageTimeout                 // the backend was too slow: 504
	stageTryTimeout              // the attempt outlived per_try_timeout before its response head: 504 unless retried
)

// retry reasons, as a bit set for the access log.
const (
	retriedConnect uint8 = 1 << iota
	retriedReset
	retriedStatus
	retriedTryTimeout
)

// attemptReq is what the loop needs to know about the request itself.
type attemptReq struct {
	idempotent bool
	body       *reqBody // nil: no body, or not HTTP
	// hold keeps a successful attempt's endpoint begun: the caller ends it
	// when the connection ends (TCP, upgrades).
	hold bool
	// resp holds an HTTP attempt's response: reset (its streamed body
	// closed, its connection given back or closed) when a status retry
	// drops it. nil: no retry on status.
	resp *fasthttp.Response
}

// resendable says whether the whole request can go out again.
func (r *attemptReq) resendable() bool { return r.body == nil || r.body.resendable() }

// replayable says whether a request a backend answered may be sent to
// another: idempotent, or with its whole body kept (buffer_body), and in
// either case whole.
func (r *attemptReq) replayable() bool {
	return r.resendable() && (r.idempotent || r.body != nil)
}

// outcome is what the loop ended with.
type outcome struct {
	ep       *balancer.Endpoint // the last endpoint tried; nil if none was
	st       stage
	status   int // the backend's status, for stageOK over HTTP
	attempts int
	retried  uint8
	// retryStatus is the last status retried on (retriedStatus).
	retryStatus int
	elapsed     time.Duration // since start, at the end of the last attempt
}

// tryFunc runs one attempt on ep and says how far it got; for HTTP it
// also returns the backend's status.
type tryFunc func(ep *balancer.Endpoint) (stage, int)

// run is the attempt loop. start is when the request (or connection)
// arrived; one clock read per attempt serves the latency average, the next
// attempt and the request's duration.
func (t *Target) run(cfg *TargetConfig, hash uint64, start time.Time, r attemptReq, try tryFunc) outcome {
	t.deposit(cfg.Retry.Budget)
	// Endpoints already tried, made on the first retry: a slice handed to
	// Picker.Pick (an interface method) escapes, so a stack array here cost
	// every request an allocation.
	var tried []*balancer.Endpoint
	picker := t.Pool.Picker()
	var o outcome
	for attempt := 0; ; attempt++ {
		ep := picker.Pick(hash, tried)
		if ep == nil {
			o.st = stageNoBackend
			o.elapsed = time.Since(start)
			return o
		}
		o.ep, o.attempts = ep, attempt+1
		ep.Begin()
		st, status := try(ep)
		prev := o.elapsed
		o.elapsed = time.Since(start)
		if !(r.hold && st == stageOK) {
			ep.End(o.elapsed - prev)
		}
		o.st, o.status = st, status
		switch st {
		case stageOK:
			if status >= 500 {
				ep.Failure()
			} else {
				ep.Success()
			}
			if status == 0 {
				status = 200
			}
			if s := ep.Stats; s != nil {
				s.ByClass[metrics.ClassIndex(status)].Inc()
			}
			ep.Traffic.Status(balancer.Outcome(metrics.ClassIndex(status)), o.elapsed-prev)
			if status < 500 || r.resp == nil || !cfg.Retry.onStatus(status) || attempt >= cfg.Retry.Attempts ||
				!r.replayable() || !t.withdraw() {
				return o
			}
			// The answer is dropped: its body closed, its connection back.
			r.resp.Reset()
			o.retried |= retriedStatus
			o.retryStatus = status
			t.countStatusRetry(status)
			tried = appendTried(tried, ep)
			picker = t.Pool.Picker()
			continue
		case stageQueue, stageLocal, stageClient:
			ep.Traffic.Count(outcomeOf(st))
			return o // nobody's fault but the client's or holdfast's own
		}
		ep.Traffic.Status(outcomeOf(st), o.elapsed-prev)
		ep.Failure()
		if s := ep.Stats; s != nil {
			s.ByClass[5].Inc()
		}
		if st == stageTimeout || attempt >= cfg.Retry.Attempts || !retriable(cfg, st, &r) || !t.withdraw() {
			return o
		}
		switch st {
		case stageConnect:
			o.retried |= retriedConnect
			if t.retryConnect != nil {
				t.retryConnect.Inc()
			}
		case stageTryTimeout:
			o.retried |= retriedTryTimeout
			if t.retryTimeout != nil {
				t.retryTimeout.Inc()
			}
		default:
			o.retried |= retriedReset
			if t.retryReset != nil {
				t.retryReset.Inc()
			}
		}
		tried = appendTried(tried, ep)
		picker = t.Pool.Picker()
	}
}

// outcomeOf is the dashboard's class of a failed attempt.
func outcomeOf(st stage) balancer.Outcome {
	switch st {
	case stageConnect:
		return balancer.OutConnect
	case stageQueue:
		return balancer.OutQueue
	case stageLocal:
		return balancer.OutLocal
	case stageClient:
		return balancer.OutClient
	case stageTimeout, stageTryTimeout:
		return balancer.OutTimeout
	case stageNoBackend:
		return balancer.OutNoBackend
	}
	return balancer.OutReset
}

// appendTried notes ep as tried, up to four endpoints.
func appendTried(tried []*balancer.Endpoint, ep *balancer.Endpoint) []*balancer.Endpoint {
	if tried == nil {
		tried = make([]*balancer.Endpoint, 0, 4)
	}
	if len(tried) < cap(tried) {
		tried = append(tried, ep)
	}
	return tried
}

// retriable says whether a failed attempt may go to another backend: a
// request that never left holdfast always may (any method, if its whole
// body can be sent again); one reset before any response byte only if
// idempotent and its whole body can be sent again.
func retriable(cfg *TargetConfig, st stage, r *attemptReq) bool {
	switch st {
	case stageConnect:
		return cfg.Retry.OnConnectFailure
	case stageWrite:
		return cfg.Retry.OnConnectFailure && r.resendable()
	case stageRead:
		return cfg.Retry.OnReset && r.idempotent && r.resendable()
	case stageTryTimeout:
		// per_try_timeout is the operator's say-so for slow tries.
		return r.idempotent && r.resendable()
	}
	return false
}

type dialError struct{ err error }

func (e *dialError) Error() string { return "connect: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

type attemptError struct {
	stage stage
	err   error
}

func (e *attemptError) Error() string { return e.err.Error() }
func (e *attemptError) Unwrap() error { return e.err }

// fail classifies err, which happened at stage s.
func fail(s stage, err error) error {
	var ce *clientError
	if errors.As(err, &ce) {
		return &attemptError{stageClient, err}
	}
	if localExhaustion(err) {
		return &attemptError{stageLocal, err}
	}
	var ne net.Error
	if errors.Is(err, fasthttp.ErrTimeout) || (errors.As(err, &ne) && ne.Timeout()) {
		if s == stageConnect {
			return &attemptError{stageConnect, err}
		}
		return &attemptError{stageTimeout, err}
	}
	return &attemptError{s, err}
}

// isTimeout reports a deadline that passed.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, fasthttp.ErrTimeout) || (errors.As(err, &ne) && ne.Timeout())
}

// localExhaustion reports an error that is holdfast's own lack of a
// resource (descriptors, memory, local ports), not a backend's failure.
func localExhaustion(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.EADDRNOTAVAIL)
}

// stageOf classifies an error of an attempt.
func stageOf(err error) stage {
	if err == nil {
		return stageOK
	}
	var ae *attemptError
	if errors.As(err, &ae) {
		return ae.stage
	}
	if errors.Is(err, fasthttp.ErrNoFreeConns) {
		return stageQueue
	}
	var de *dialError
	if errors.As(err, &de) {
		return stageOf(fail(stageConnect, de.err))
	}
	return stageRead
}
