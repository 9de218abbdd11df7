package control

import (
	"context"
	"errors"
	"fmt"

	"github.com/cmk-project/cmk/internal/audit"
	"github.com/cmk-project/cmk/internal/guidance"
	"github.com/cmk-project/cmk/internal/keyring"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/store"
)

// EnsureOrg records an org the first time one of its members calls, and
// creates its default sandboxes with their data keys.
func (s *Service) EnsureOrg(ctx context.Context, org string) error {
	created, err := s.Store.EnsureOrg(ctx, org)
	if err != nil || !created {
		return err
	}
	for _, sb := range DefaultSandboxes {
		if err := s.Keyring.CreateSandbox(ctx, org, sb); err != nil && !errors.Is(err, store.ErrDuplicateName) {
			return err
		}
	}
	return nil
}

// Sandboxes lists the org's sandboxes.
func (s *Service) Sandboxes(ctx context.Context, org string) ([]string, error) {
	return s.Store.Sandboxes(ctx, org)
}

// ValidSandboxName reports whether n may name a sandbox: 1 to 64 lowercase
// letters, digits and hyphens, not starting with a hyphen.
func ValidSandboxName(n string) bool {
	if n == "" || len(n) > 64 {
		return false
	}
	for i, c := range n {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || (c == '-' && i > 0)
		if !ok {
			return false
		}
	}
	return true
}

// CreateSandbox makes a sandbox with data keys for each of its stores,
// wrapped under the org's key. A locked org gets the gate's
// *keyhealth.Refused.
func (s *Service) CreateSandbox(ctx context.Context, org, name string) (err error) {
	defer func() { s.action(ctx, org, audit.OpSandboxCreate, fmt.Sprintf("sandbox %q", name), err) }()
	if !ValidSandboxName(name) {
		return problem(ErrInvalidField, "Invalid sandbox name", fmt.Sprintf("Sandbox name %q is not allowed: use 1 to 64 lowercase letters, digits and hyphens, starting with a letter or digit.", name), "")
	}
	if err := s.Gate.Allow(org); err != nil {
		return err
	}
	err = s.Keyring.CreateSandbox(ctx, org, name)
	switch {
	case errors.Is(err, store.ErrDuplicateName):
		return problem(ErrSandboxExists, "Sandbox exists", fmt.Sprintf("Sandbox %q already exists.", name), "")
	case kms.KindOf(err) != "":
		return problem(ErrKeyUnavailable, "Customer key unavailable", "The sandbox's data keys could not be wrapped: "+guidance.Describe(err), "Check your key's health, then try again.")
	}
	return err
}

// OrgDeletedNote is what a deleted org is told.
const OrgDeletedNote = "The org's data keys are destroyed, so none of its stored data can be read again."

// DeleteOrg deletes the org and all its data. It is allowed in every key
// state — including revoked, where it is one of the few things left to do —
// and needs the org id repeated in confirm so it cannot happen by accident.
//
// The data keys go first: once they are gone every stored object of the org
// is unreadable, even if removing the objects themselves is interrupted.
func (s *Service) DeleteOrg(ctx context.Context, org, confirm string) error {
	if confirm != org {
		return problem(ErrConfirmation, "Confirmation required", "Deleting an org destroys all of its data, in every sandbox, for good.",
			fmt.Sprintf("Repeat the org id to confirm: DELETE /data/infrastructure/manager/org?confirm=%s", org))
	}
	if err := s.Store.DeleteOrg(ctx, org); err != nil {
		return err
	}
	if s.Keys != nil {
		s.Keys.Cache.WipeOrg(org)
		s.Keys.ForgetOrg(org)
	}
	s.Gate.Forget(org)
	var lakeErr, profErr error
	if s.Lake != nil {
		lakeErr = s.Lake.DeleteOrg(ctx, org)
	}
	if s.Profiles != nil {
		profErr = s.Profiles.Backend.DeleteOrg(ctx, org)
	}
	if lakeErr != nil || profErr != nil {
		s.log().Error("org deleted; stored objects not all removed", "org", org, "lake_err", lakeErr, "profile_err", profErr)
	}
	return nil
}

// SandboxExists reports whether the org has the sandbox.
func (s *Service) SandboxExists(ctx context.Context, org, name string) (bool, error) {
	return s.Store.SandboxExists(ctx, org, name)
}

// Remedy is the numbered steps that restore the org's access to its key
// after a failure of the given kind (nil when there are none).
func (s *Service) Remedy(ctx context.Context, org string, kind kms.Kind) []string {
	o, _ := s.Store.Org(ctx, org) // without the org, the steps name no vault
	return guidance.Steps(string(kind), s.Env, keyring.CustomerRef(o))
}
