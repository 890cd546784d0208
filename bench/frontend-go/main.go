// The .dockerignore matching that docker's own tools do (moby/patternmatcher, as the docker
// CLI and BuildKit use it), on the same inputs as builder's frontend_bench, for bench/frontend.sh:
//
//	frontend-go PATTERNS PATHS [ROUNDS]
//
// Prints one line: the median time of a round (read the patterns, check every path).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/moby/patternmatcher"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: frontend-go PATTERNS PATHS [ROUNDS]")
		os.Exit(2)
	}
	rounds := 21
	if len(os.Args) > 3 {
		rounds, _ = strconv.Atoi(os.Args[3])
	}
	patternText, err := os.ReadFile(os.Args[1])
	check(err)
	pathText, err := os.ReadFile(os.Args[2])
	check(err)
	paths := strings.Split(strings.TrimRight(string(pathText), "\n"), "\n")
	times := make([]time.Duration, 0, rounds)
	excluded := 0
	for r := 0; r < rounds; r++ {
		start := time.Now()
		pm, err := patternmatcher.New(readIgnoreFile(string(patternText)))
		check(err)
		excluded = 0
		for _, p := range paths {
			m, err := pm.MatchesOrParentMatches(p)
			check(err)
			if m {
				excluded++
			}
		}
		times = append(times, time.Since(start))
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	m := times[len(times)/2]
	fmt.Printf("dockerignore: %d paths, %d excluded, %.1f ms a round, %.0f ns a path\n",
		len(paths), excluded, m.Seconds()*1e3, m.Seconds()*1e9/float64(len(paths)))
}

// readIgnoreFile reads .dockerignore lines the way docker does (ignorefile.ReadAll, which
// Debian's patternmatcher 0.5 does not have yet): `#` comments in the first column, blanks
// trimmed, `!` exceptions, cleaned patterns without a leading `/`.
func readIgnoreFile(text string) []string {
	var patterns []string
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		p := strings.TrimSpace(line)
		if p == "" {
			continue
		}
		invert := p[0] == '!'
		if invert {
			p = strings.TrimSpace(p[1:])
		}
		if len(p) > 0 {
			p = filepath.ToSlash(filepath.Clean(p))
			if len(p) > 1 && p[0] == '/' {
				p = p[1:]
			}
		}
		if invert {
			p = "!" + p
		}
		patterns = append(patterns, p)
	}
	return patterns
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
