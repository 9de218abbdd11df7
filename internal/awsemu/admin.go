package awsemu

import (
	"errors"
	"fmt"
	"time"
)

// ScheduleKeyDeletion schedules a key's deletion days from now, as the
// key owner's ScheduleKeyDeletion does (7 to 30 days).
func (e *Emulator) ScheduleKeyDeletion(keyRef string, days int) (time.Time, error) {
	if days < minPendingDays || days > maxPendingDays {
		return time.Time{}, fmt.Errorf("a deletion window is %d to %d days, not %d", minPendingDays, maxPendingDays, days)
	}
	var when time.Time
	err := e.adminKey(keyRef, func(k *key) error {
		if k.state == statePendingDeletion {
			return errors.New("the key is already pending deletion")
		}
		k.state, k.pendingDays = statePendingDeletion, days
		k.deletionDate = e.now().UTC().AddDate(0, 0, days)
		when = k.deletionDate
		return nil
	})
	return when, err
}

// CancelKeyDeletion cancels a scheduled deletion; as in AWS the key comes
// back disabled.
func (e *Emulator) CancelKeyDeletion(keyRef string) error {
	return e.adminKey(keyRef, func(k *key) error {
		if k.state != statePendingDeletion {
			return errors.New("the key is not pending deletion")
		}
		k.state, k.deletionDate, k.pendingDays = stateDisabled, time.Time{}, 0
		return nil
	})
}

// KeyPolicy returns a key's policy document.
func (e *Emulator) KeyPolicy(keyRef string) (string, error) {
	var p string
	err := e.adminKey(keyRef, func(k *key) error { p = k.policyText; return nil })
	return p, err
}
