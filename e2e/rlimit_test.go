package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// Environment of the "rlimit" role: the open-files limit and the program
// to exec under it.
const (
	envNofile = "HOLDFAST_E2E_NOFILE"
	envExec   = "HOLDFAST_E2E_EXEC"
)

// execLimited is the "rlimit" role: set the soft and hard open-files
// limits to $HOLDFAST_E2E_NOFILE, then exec $HOLDFAST_E2E_EXEC with this
// process's arguments, so the limit holds from the program's first
// instruction and the test process keeps its own.
func execLimited() {
	n, err := strconv.ParseUint(os.Getenv(envNofile), 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, "rlimit role:", err)
		os.Exit(2)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: n, Max: n}); err != nil {
		fmt.Fprintln(os.Stderr, "setrlimit:", err)
		os.Exit(2)
	}
	bin := os.Getenv(envExec)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envRole+"=") && !strings.HasPrefix(kv, envNofile+"=") && !strings.HasPrefix(kv, envExec+"=") {
			env = append(env, kv)
		}
	}
	err = syscall.Exec(bin, append([]string{bin}, os.Args[1:]...), env)
	fmt.Fprintln(os.Stderr, "exec:", err)
	os.Exit(2)
}

// limitedHoldfast is a holdfast command run with an open-files limit of
// nofile (soft and hard), through this test binary in the "rlimit" role.
func limitedHoldfast(t *testing.T, nofile int, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), envRole+"=rlimit", envNofile+"="+strconv.Itoa(nofile), envExec+"="+holdfastBinary(t))
	return cmd
}
