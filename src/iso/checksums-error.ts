// The error a checksum list, a signature or a keyring that cannot be trusted fails with.

export class ChecksumsError extends Error {}
