//! Till-side SDK for Wenhui. Grows with the redemption issue.
