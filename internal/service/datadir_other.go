//go:build !unix

package service

import "log/slog"

// checkDataDir does nothing where files have no Unix owner and mode bits;
// there the data directory's access control list is the operator's to set.
func checkDataDir(string, *slog.Logger) error { return nil }
