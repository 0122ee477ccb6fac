package proxy

import (
	"testing"
	"unsafe"
)

// Every idle client connection, parked or not, holds one countedConn: it
// is kept within the runtime's 256-byte size class (the next is 288), a
// part of the memory per idle connection that bench-idle measures.
func TestCountedConnFitsItsSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(countedConn{}); n > 256 {
		t.Fatalf("countedConn is %d bytes, over the 256-byte size class", n)
	}
}
