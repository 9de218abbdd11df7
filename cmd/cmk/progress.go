package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/mattn/go-isatty"
)

// progressBar shows how far a long job has got. On a terminal it redraws
// one line in place; elsewhere (pipes, logs, tests) it prints a plain line
// when the phase changes and at each quarter of the way, so the output stays
// short and stable.
type progressBar struct {
	w      io.Writer
	tty    bool
	width  int    // cells of the bar itself
	indent string // written before every bar line

	label    string // phase shown before the bar
	quarter  int    // last quarter printed when not a terminal, -1 none
	drawn    bool   // a bar line is on screen (terminal only)
	lastLine string
}

func newProgressBar(w io.Writer) *progressBar {
	return &progressBar{w: w, tty: isTerminal(w), width: 30, quarter: -1}
}

// isTerminal reports whether w is a terminal (not merely a character
// device such as /dev/null) and TERM allows redrawing.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("TERM") == "dumb" {
		return false
	}
	return isatty.IsTerminal(f.Fd())
}

// Phase starts a phase without a count (e.g. "validating the key").
func (p *progressBar) Phase(label string) {
	if label == p.label {
		return
	}
	p.label, p.quarter = label, -1
	if p.tty {
		p.draw(label)
		return
	}
	p.line(label)
}

// Set shows done out of total in the current phase, named label.
func (p *progressBar) Set(label string, done, total int) {
	if total <= 0 {
		p.Phase(label)
		return
	}
	done = min(max(done, 0), total)
	if p.tty {
		p.label = label
		filled := p.width * done / total
		bar := strings.Repeat("█", filled) + strings.Repeat("░", p.width-filled)
		p.draw(fmt.Sprintf("%s %s %d/%d (%d%%)", label, bar, done, total, 100*done/total))
		return
	}
	q := 4 * done / total
	if label != p.label {
		p.label, p.quarter = label, -1
	}
	if q == p.quarter {
		return
	}
	p.quarter = q
	p.line(fmt.Sprintf("%s %d/%d (%d%%)", label, done, total, 100*done/total))
}

// Note prints a message on its own line, keeping the bar below it.
func (p *progressBar) Note(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	if p.tty && p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
		fmt.Fprintln(p.w, msg)
		fmt.Fprint(p.w, p.lastLine)
		return
	}
	fmt.Fprintln(p.w, msg)
}

// Done ends the bar's line, leaving its last state on screen.
func (p *progressBar) Done() {
	if p.tty && p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

func (p *progressBar) draw(s string) {
	s = p.indent + s
	p.lastLine = s
	fmt.Fprint(p.w, "\r\033[K"+s)
	p.drawn = true
}

func (p *progressBar) line(s string) {
	s = p.indent + s
	if s == p.lastLine {
		return
	}
	p.lastLine = s
	fmt.Fprintln(p.w, s)
}
