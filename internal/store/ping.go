package store

import "context"

// Ping reports whether the database answers (the readiness probe).
func (s *Store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }
