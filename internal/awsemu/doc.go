// Package awsemu is a local AWS KMS for development and tests: the KMS
// JSON 1.1 protocol (POST /, X-Amz-Target: TrentService.<Op>) on an
// http.Handler that the official clients (aws-sdk-go-v2, awscli, boto3)
// accept when pointed at it with an endpoint URL.
//
// # What it guarantees
//
//   - Every request is authenticated with Signature Version 4, verified in
//     full: canonical request, string to sign, signing key, the credential
//     scope (date, the emulator's Region, service "kms"), X-Amz-Date within
//     five minutes of the emulator's clock and, for session credentials,
//     X-Amz-Security-Token. Only access keys the emulator issued are known.
//   - Key policies are JSON documents that are evaluated on every call:
//     principal (an account's root, a user or role ARN, or "*"), action
//     with wildcards, resource, and the conditions cmk relies on
//     (aws:PrincipalAccount, aws:PrincipalArn, kms:CallerAccount,
//     kms:EncryptionContext:<key>, kms:EncryptionContextKeys). Default deny;
//     an explicit Deny wins; a caller of another account needs the key
//     policy to name its account or itself.
//   - Ciphertext blobs are AES-256-GCM under the key's material of the
//     moment, with the encryption context bound as additional data. A blob
//     names its key and material version, so blobs made before a rotation
//     still open; any change to a blob or its context fails to open.
//   - Errors have AWS's status and body ({"__type":…,"message":…}) so the
//     SDKs raise their typed errors (*types.DisabledException, …).
//
// Time (signature skew, deletion windows, automatic rotation, rate
// windows) comes from an injected clock, randomness from an injected
// reader.
//
// # Deliberate differences from AWS
//
//   - There is no IAM: a key policy statement that names an account's root
//     (or the bare account id) allows every principal of that account, as
//     if each had an IAM policy allowing the action. Operations that AWS
//     authorizes with IAM alone (CreateKey, ListKeys, ListAliases) are
//     allowed to every principal of the caller's account.
//   - Only symmetric keys (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT) in one
//     Region; no grants, tags, imported material, custom key stores or
//     multi-Region keys.
//   - Condition operators: the String* family (with IfExists and the
//     ForAnyValue/ForAllValues qualifiers), Bool and Null. A policy using
//     any other operator is refused by PutKeyPolicy with
//     MalformedPolicyDocumentException rather than silently ignored.
//   - A key whose deletion date has passed disappears the next time it is
//     looked up; automatic rotation happens the next time the key is used
//     after its date.
//   - Blobs are this emulator's own format; they mean nothing to AWS.
//
// Serve listens on a loopback address, over plain http (awscli and boto3
// accept --endpoint-url http://127.0.0.1:N) or TLS with a certificate
// authority made for the server. The admin API (CreateAccount, CreateUser,
// AssumeRole, CreateKey, SetFault, …) is plain Go on *Emulator. The package is a development
// tool: only cmd/cmk, devenv, bench and e2e may import it, and cmkd must
// not link it.
package awsemu
