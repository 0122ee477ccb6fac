//go:build unix

package drill

import "syscall"

// raiseNoFile raises the soft RLIMIT_NOFILE towards need (at most the hard
// limit) and returns the soft limit in force.
func raiseNoFile(need uint64) uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	if rl.Cur >= need {
		return rl.Cur
	}
	want := rl
	want.Cur = min(need, rl.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		return rl.Cur
	}
	return want.Cur
}
