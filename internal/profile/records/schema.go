package records

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
)

// Schema changes are numbered SQL files per backend, applied in order and
// recorded in profile_records_migrations. The bookkeeping table is our own,
// not the store package's, so both can share one database.
//
//go:embed schema/sqlite/*.sql schema/postgres/*.sql
var schemaFS embed.FS

type migration struct {
	version string
	stmts   []string
}

func loadMigrations(backend string) ([]migration, error) {
	names, err := fs.Glob(schemaFS, "schema/"+backend+"/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out []migration
	for _, name := range names {
		body, err := schemaFS.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", name, err)
		}
		out = append(out, migration{
			version: strings.TrimSuffix(path.Base(name), ".sql"),
			stmts:   splitSQL(string(body)),
		})
	}
	return out, nil
}

// splitSQL splits a migration into statements, dropping "--" comments. The
// migrations are written so that no string literal holds "--" or ";".
func splitSQL(body string) []string {
	var b strings.Builder
	for _, l := range strings.Split(body, "\n") {
		if i := strings.Index(l, "--"); i >= 0 {
			l = l[:i]
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	var out []string
	for _, stmt := range strings.Split(b.String(), ";") {
		if s := strings.TrimSpace(stmt); s != "" {
			out = append(out, s)
		}
	}
	return out
}

const migrationsTable = `CREATE TABLE IF NOT EXISTS profile_records_migrations (version TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)`
