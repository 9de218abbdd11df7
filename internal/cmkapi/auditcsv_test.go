package cmkapi

import (
	"bytes"
	"encoding/csv"
	"testing"
	"time"
)

func TestWriteAuditCSV(t *testing.T) {
	at := time.Date(2026, 12, 2, 15, 4, 5, 0, time.FixedZone("X", 3600))
	entries := []AuditEntry{
		{ID: "1", At: at, Actor: "user:alice", Operation: "config.submit", Outcome: "ok", Detail: `name "c1", a,b and "quotes"` + "\nsecond line"},
		{ID: "2", At: at, Actor: "system", Operation: "unwrap", Outcome: "KEY_DISABLED", Key: "https://v.vault.azure.net/keys/k", KeyVersion: "abc"},
		{ID: "3", At: at, Actor: "user:alice", Operation: "alert.acknowledge", Outcome: "ok", Detail: "@SUM(1+1)", KeyVersion: "=cmd|' /C calc'!A0"},
	}
	var buf bytes.Buffer
	if err := WriteAuditCSV(&buf, entries); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatalf("the CSV does not parse back: %v", err)
	}
	if len(rows) != 4 || len(rows[0]) != len(AuditCSVHeader) || rows[0][0] != "at" {
		t.Fatalf("rows = %q, want a header and 3 entries", rows)
	}
	if rows[1][0] != "2026-12-02T14:04:05Z" {
		t.Errorf("time = %q, want UTC RFC 3339", rows[1][0])
	}
	if rows[1][6] != entries[0].Detail {
		t.Errorf("detail = %q, want %q back unchanged", rows[1][6], entries[0].Detail)
	}
	if rows[2][4] != entries[1].Key || rows[2][5] != "abc" {
		t.Errorf("key columns = %q", rows[2][4:6])
	}
	for _, f := range []string{rows[3][5], rows[3][6]} {
		if f[0] != '\'' {
			t.Errorf("field %q would run as a spreadsheet formula; want it prefixed with '", f)
		}
	}
}

func TestWriteAuditCSVLeavesPlainFieldsAlone(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteAuditCSV(&buf, []AuditEntry{{ID: "1", Actor: "user:alice", Operation: "unwrap", Outcome: "ok"}}); err != nil {
		t.Fatal(err)
	}
	rows, _ := csv.NewReader(&buf).ReadAll()
	if rows[1][1] != "user:alice" || rows[1][2] != "unwrap" {
		t.Errorf("row = %q, want plain fields unchanged", rows[1])
	}
}
