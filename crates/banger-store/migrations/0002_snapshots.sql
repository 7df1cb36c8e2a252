-- Snapshots: a paused VM's device state, memory and disks, kept under
-- <state>/snapshots/<id>/. `kind` is 'snapshot' (taken by a user or a fork) or 'template'
-- (an image's warm-start snapshot). `key` is what a restore must match (kernel, image, VMM,
-- vCPUs, memory). A row is inserted only after its files are complete.
CREATE TABLE snapshots (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    kind           TEXT NOT NULL CHECK (kind IN ('snapshot', 'template')),
    source_vm      TEXT NOT NULL,
    image_id       TEXT NOT NULL REFERENCES images(id) ON DELETE RESTRICT,
    vcpu           INTEGER NOT NULL CHECK (vcpu > 0),
    memory_mib     INTEGER NOT NULL CHECK (memory_mib > 0),
    disk_bytes     INTEGER NOT NULL CHECK (disk_bytes > 0),
    vmm            TEXT NOT NULL,
    key            TEXT NOT NULL,
    spec_json      TEXT NOT NULL DEFAULT '{}',
    size_bytes     INTEGER NOT NULL DEFAULT 0,
    created_at     TEXT NOT NULL
);

CREATE INDEX snapshots_image_id ON snapshots(image_id);
