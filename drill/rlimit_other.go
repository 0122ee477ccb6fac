//go:build !unix

package drill

// raiseNoFile cannot tell the limit here; 0 means unknown.
func raiseNoFile(uint64) uint64 { return 0 }
