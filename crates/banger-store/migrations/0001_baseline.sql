-- Durable identity, spec and state only. Nothing transient (pids, tap names, loop devices)
-- lives here: that is in memory and in each VM dir's handles.json.
CREATE TABLE kernels (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    version       TEXT NOT NULL,
    source        TEXT NOT NULL,
    managed       INTEGER NOT NULL DEFAULT 1,
    vmlinux_path  TEXT NOT NULL,
    initrd_path   TEXT,
    modules_dir   TEXT,
    sha256        TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE TABLE images (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    source         TEXT NOT NULL,
    managed        INTEGER NOT NULL DEFAULT 1,
    rootfs_path    TEXT NOT NULL,
    work_seed_path TEXT,
    kernel_id      TEXT REFERENCES kernels(id) ON DELETE RESTRICT,
    digest         TEXT,
    config_json    TEXT NOT NULL DEFAULT '{}',
    size_bytes     INTEGER NOT NULL DEFAULT 0,
    created_at     TEXT NOT NULL
);

CREATE TABLE vms (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    image_id        TEXT NOT NULL REFERENCES images(id) ON DELETE RESTRICT,
    state           TEXT NOT NULL CHECK (state IN ('created', 'running', 'stopped', 'error')),
    guest_ip        TEXT NOT NULL UNIQUE,
    vcpu            INTEGER NOT NULL CHECK (vcpu > 0),
    memory_mib      INTEGER NOT NULL CHECK (memory_mib > 0),
    disk_bytes      INTEGER NOT NULL CHECK (disk_bytes > 0),
    nat             INTEGER NOT NULL DEFAULT 0,
    vmm             TEXT,
    spec_json       TEXT NOT NULL DEFAULT '{}',
    workspace_json  TEXT,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    last_touched_at TEXT NOT NULL
);

CREATE INDEX vms_image_id ON vms(image_id);
