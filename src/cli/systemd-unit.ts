// inetboot's systemd unit, one text for `inetboot init --systemd` and the Debian package (whose
// build prints it with `inetboot init --print-unit --user inetboot`): a hardened service with
// only the capabilities the servers need, state and cache in folders systemd makes for it.

export interface UnitOptions {
  /** The command that runs inetboot (the executable, or node and bin/inetboot.js). */
  exec: string[];
  config: string;
  /** A system user to run as; without one it runs as root, its capabilities bounded. */
  user?: string;
}

const quote = (arg: string): string => (/^[\w@%+=:,./-]+$/.test(arg) ? arg : JSON.stringify(arg));

export function systemdUnit(o: UnitOptions): string {
  const user = o.user ? `User=${o.user}\nGroup=${o.user}\n` : "";
  return `# inetboot's boot server as a system service. Configuration: ${o.config}; apply edits with
# \`systemctl reload inetboot\` (listen, dhcp, tftp, http, nbd, state, cache and loaders need
# \`systemctl restart inetboot\`). Local changes go in a drop-in: \`systemctl edit inetboot\`
# (e.g. ReadOnlyPaths or ProtectHome=no for images kept under /home).
[Unit]
Description=inetboot network-boot server (DHCP/proxyDHCP, TFTP, HTTP, NBD)
Documentation=file:/usr/share/doc/inetboot/serve.md file:/usr/share/doc/inetboot/install.md
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
${user}ExecStart=${[...o.exec, "serve", "--config", o.config].map(quote).join(" ")}
# serve checks the edited file as --check does and swaps it in; a broken one is refused.
ExecReload=/bin/sh -c "kill -HUP $MAINPID"
Restart=on-failure
RestartSec=5s
Environment=INETBOOT_STATE_DIR=/var/lib/inetboot
StateDirectory=inetboot
StateDirectoryMode=0750
CacheDirectory=inetboot
CacheDirectoryMode=0750
UMask=0027

# CAP_NET_BIND_SERVICE: ports below 1024 (DHCP 67, TFTP 69). CAP_NET_RAW: SO_BINDTOIFINDEX
# (DHCP and TFTP sockets tied to listen.interface) on kernels before 5.7. Broadcast replies
# need no capability; nothing needs CAP_NET_ADMIN.
AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_RAW
CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_RAW

# The server only reads the system (kernels, initrds, images, /usr/lib/ipxe) and writes its
# state and cache folders. No MemoryDenyWriteExecute: V8's JIT needs it.
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=${o.exec.some((a) => /^\/(root|home)\//.test(a)) ? "read-only" : "yes"}
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
`;
}
