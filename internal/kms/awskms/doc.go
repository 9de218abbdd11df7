// Package awskms is the kms.Provider for customer keys in AWS KMS, with
// the official aws-sdk-go-v2 client.
//
// # Which key
//
// A customer key is a symmetric (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT)
// single-Region key in the platform's Region, named by its key ARN or an
// alias ARN. ParseARN checks every reference before any request: an
// allowed partition (aws, aws-us-gov, aws-cn), a Region of the allowlist
// and of that partition, a twelve-digit account, key/{uuid} or
// alias/{name}; multi-Region keys and AWS managed aliases are refused. A
// kms.KeyRef holds the ARN split in two (KeyARN.Ref): the scope
// arn:{partition}:kms:{region}:{account} as VaultURL and key/{id} or
// alias/{name} as Name. Every answer is checked to be about the key asked
// for (for an alias: a key of the alias's account and Region).
//
// # Whose org
//
// Client holds the platform's credentials; ForOrg gives the provider of
// one org, and every Encrypt and Decrypt it makes carries the encryption
// context {"cmk:org": org} (plus "cmk:sandbox" and "cmk:store" when the
// caller adds them with WithScope). The key policy the customer pastes
// conditions the platform's access on kms:EncryptionContext:cmk:org, so a
// request for another org is refused by AWS (AccessDeniedException, which
// is kms.KindIdentityUnauthorized) even if that org learns the key ARN, and
// a ciphertext only decrypts with the context it was made with.
//
// # Versions
//
// AWS rotates key material behind the same ARN and keeps old ciphertexts
// decrypting, and Encrypt does not say which material it used. Describe
// therefore reports an empty Version and Wrap an empty KeyVersion: after a
// rotation nothing needs re-wrapping. Details reports the current key
// material id and the last rotation, for display.
//
// # Credentials and endpoint
//
// New loads the standard credential chain (environment, shared config and
// credentials files, web identity, instance or task role) unless Config
// gives credentials; Config.Endpoint points the client at another endpoint
// (the local emulator, plain http only on loopback).
//
// # Failures
//
// Every error is a *kms.Error; Classify maps AWS answers and network
// failures to a kms.Kind (see Classify for the table). Throttling is not
// retried: it comes back as kms.KindThrottled. 5xx answers and dropped
// connections are retried twice with short delays. Anything unrecognised
// is transient, never a revocation.
//
// # What is never logged
//
// The package logs nothing. Errors carry the key ARN, HTTP status and AWS
// error codes, never data keys, ciphertexts or credentials.
//
// # Differences from the Key Vault provider
//
// Describe reports KeyType "SYMMETRIC_DEFAULT", Bits 0 and Ops
// ["encrypt", "decrypt"]; NotBefore, Expires and RecoveryLevel are unset
// (AWS keys have none of them). A key pending deletion is
// kms.KindKeyNotFound, as a soft-deleted vault key is.
package awskms
