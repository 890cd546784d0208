module strata.bench/frontend

go 1.19

require github.com/moby/patternmatcher v0.5.0

// Debian's golang-github-moby-patternmatcher-dev: no module download needed.
replace github.com/moby/patternmatcher => /usr/share/gocode/src/github.com/moby/patternmatcher
