-- Versioned project state (issue 16): a device's refresh costs nothing when nothing changed.
--
--  - Every project has a version that every change a device can see bumps, in the changing
--    transaction: triggers on vidsync.devices catch registrations, approvals, revocations,
--    releases, discarded registrations, lighthouses and Syncthing IDs, whichever function makes
--    them. One transaction takes one version however many rows it changes; the version row's lock
--    orders concurrent transactions, so versions commit in order and none is lost or reused.
--  - vidsync.project_changes records what each version changed (a peer or lighthouse by name, a
--    fingerprint blocked or expired). device_sync answers a device that sends the version it has
--    with 'unchanged' (about 50 bytes), a delta since then, or a full snapshot when it has no
--    version or one older than the changes kept (change_retention).
--  - The same transaction sends NOTIFY on the project's channel (vidsync_<project id>) with the
--    new version as its only payload, which Postgres delivers at commit: devices with a direct
--    connection LISTEN and refresh at once; others poll slowly.
--  - Heartbeats: last_seen_at is written at most every heartbeat_seconds() per device, by
--    device_sync and by the older device_refresh alike.
--  - The blocklist drops a revoked certificate once it expires (nebula refuses it anyway): the
--    first refresh after the expiry records it as a change, so devices drop it from theirs.

-- How long changes are kept for deltas; a device whose version is older gets a full snapshot.
CREATE FUNCTION vidsync.change_retention() RETURNS interval LANGUAGE sql IMMUTABLE SET search_path = '' AS $$
  SELECT interval '12 hours'
$$;

-- A device's last_seen_at is written at most this often (src/lib/up/sync-state.ts has the same).
CREATE FUNCTION vidsync.heartbeat_seconds() RETURNS integer LANGUAGE sql IMMUTABLE SET search_path = '' AS $$
  SELECT 300
$$;

CREATE TABLE vidsync.project_versions (
  project_id bigint PRIMARY KEY REFERENCES vidsync.projects (id) ON DELETE CASCADE,
  version bigint NOT NULL DEFAULT 0,
  -- The transaction that took `version`: its further changes share it.
  xact xid8,
  changed_at timestamptz NOT NULL DEFAULT now(),
  -- Deltas are answered to devices at this version or newer; older ones get a snapshot.
  oldest_delta bigint NOT NULL DEFAULT 0,
  -- Revoked certificates that expired before this are recorded as removed from the blocklist.
  blocklist_checked_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO vidsync.project_versions (project_id) SELECT p.id FROM vidsync.projects p;

CREATE TABLE vidsync.project_changes (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  project_id bigint NOT NULL REFERENCES vidsync.projects (id) ON DELETE CASCADE,
  version bigint NOT NULL,
  at timestamptz NOT NULL DEFAULT now(),
  -- peer, lighthouse: a device by name; block, unblock: a certificate's fingerprint.
  kind text NOT NULL CHECK (kind IN ('peer', 'lighthouse', 'block', 'unblock')),
  subject text NOT NULL
);
CREATE INDEX project_changes_version ON vidsync.project_changes (project_id, version);
CREATE INDEX project_changes_at ON vidsync.project_changes (project_id, at);
CREATE INDEX certificates_not_after ON vidsync.certificates (not_after);

CREATE FUNCTION vidsync.project_channel(p_project_id bigint) RETURNS text LANGUAGE sql IMMUTABLE SET search_path = '' AS $$
  SELECT 'vidsync_' || p_project_id
$$;

-- Records a change in the caller's transaction: the first one of a transaction takes the next
-- version (waiting for a concurrent transaction that holds the row), the others share it. Also
-- drops the changes older than the retention, and notifies the project's channel.
CREATE FUNCTION vidsync.record_change(p_project_id bigint, p_kind text, p_subject text) RETURNS bigint
LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_version bigint;
  v_same boolean;
  v_pruned bigint;
BEGIN
  SELECT v.version, v.xact = pg_catalog.pg_current_xact_id() INTO v_version, v_same
    FROM vidsync.project_versions v WHERE v.project_id = p_project_id FOR UPDATE;
  IF NOT FOUND THEN
    -- A project deleted in this statement (its devices go with it): nothing to record.
    IF NOT EXISTS (SELECT 1 FROM vidsync.projects p WHERE p.id = p_project_id) THEN
      RETURN NULL;
    END IF;
    INSERT INTO vidsync.project_versions (project_id) VALUES (p_project_id) ON CONFLICT DO NOTHING;
    SELECT v.version, v.xact = pg_catalog.pg_current_xact_id() INTO v_version, v_same
      FROM vidsync.project_versions v WHERE v.project_id = p_project_id FOR UPDATE;
  END IF;
  IF NOT coalesce(v_same, false) THEN
    v_version := v_version + 1;
    UPDATE vidsync.project_versions v SET version = v_version, xact = pg_catalog.pg_current_xact_id(), changed_at = now()
     WHERE v.project_id = p_project_id;
    WITH pruned AS (
      DELETE FROM vidsync.project_changes c
       WHERE c.project_id = p_project_id AND c.at < now() - vidsync.change_retention() RETURNING c.version
    )
    SELECT max(pruned.version) INTO v_pruned FROM pruned;
    IF v_pruned IS NOT NULL THEN
      UPDATE vidsync.project_versions v SET oldest_delta = greatest(v.oldest_delta, v_pruned) WHERE v.project_id = p_project_id;
    END IF;
    -- Delivered at commit; the payload is the version alone.
    PERFORM pg_catalog.pg_notify(vidsync.project_channel(p_project_id), v_version::text);
  END IF;
  INSERT INTO vidsync.project_changes (project_id, version, kind, subject) VALUES (p_project_id, v_version, p_kind, p_subject);
  RETURN v_version;
END $$;

CREATE FUNCTION vidsync.project_created() RETURNS trigger LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  INSERT INTO vidsync.project_versions (project_id) VALUES (NEW.id) ON CONFLICT DO NOTHING;
  RETURN NULL;
END $$;
CREATE TRIGGER projects_version AFTER INSERT ON vidsync.projects FOR EACH ROW EXECUTE FUNCTION vidsync.project_created();

-- A device row changed in a way its project's devices see: as a peer or lighthouse (name, address,
-- status, Syncthing ID, endpoint, relay) or, when revoked, its certificates on the blocklist.
CREATE FUNCTION vidsync.device_changed() RETURNS trigger LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_fingerprint text;
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    PERFORM vidsync.record_change(OLD.project_id, CASE WHEN OLD.lighthouse THEN 'lighthouse' ELSE 'peer' END, OLD.name);
  END IF;
  IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND (NEW.name, NEW.lighthouse) IS DISTINCT FROM (OLD.name, OLD.lighthouse)) THEN
    PERFORM vidsync.record_change(NEW.project_id, CASE WHEN NEW.lighthouse THEN 'lighthouse' ELSE 'peer' END, NEW.name);
  END IF;
  IF TG_OP = 'UPDATE' AND NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL THEN
    FOR v_fingerprint IN SELECT c.fingerprint FROM vidsync.certificates c WHERE c.device_id = NEW.id AND c.not_after > now() LOOP
      PERFORM vidsync.record_change(NEW.project_id, 'block', v_fingerprint);
    END LOOP;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER devices_version_insert_delete AFTER INSERT OR DELETE ON vidsync.devices
  FOR EACH ROW EXECUTE FUNCTION vidsync.device_changed();
-- Heartbeats (last_seen_at) change nothing a device sees and skip the function altogether.
CREATE TRIGGER devices_version_update AFTER UPDATE ON vidsync.devices FOR EACH ROW
  WHEN ((OLD.name, OLD.ip, OLD.status, OLD.syncthing_id, OLD.lighthouse, OLD.endpoint, OLD.relay, OLD.revoked_at)
        IS DISTINCT FROM (NEW.name, NEW.ip, NEW.status, NEW.syncthing_id, NEW.lighthouse, NEW.endpoint, NEW.relay, NEW.revoked_at))
  EXECUTE FUNCTION vidsync.device_changed();

-- Records the revoked certificates of a project that expired since the last look, as removals
-- from the blocklist. A read when none did; of two concurrent callers one records them.
CREATE FUNCTION vidsync.expire_blocklist(p_project_id bigint) RETURNS void LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_checked timestamptz;
  v_now timestamptz := now();
  v_fingerprint text;
BEGIN
  SELECT v.blocklist_checked_at INTO v_checked FROM vidsync.project_versions v WHERE v.project_id = p_project_id;
  IF v_checked IS NULL OR NOT EXISTS (
       SELECT 1 FROM vidsync.certificates c JOIN vidsync.devices d ON d.id = c.device_id
        WHERE c.not_after > v_checked AND c.not_after <= v_now AND d.project_id = p_project_id AND d.revoked_at IS NOT NULL) THEN
    RETURN;
  END IF;
  UPDATE vidsync.project_versions v SET blocklist_checked_at = v_now
   WHERE v.project_id = p_project_id AND v.blocklist_checked_at = v_checked;
  IF NOT FOUND THEN
    RETURN; -- a concurrent refresh recorded them
  END IF;
  FOR v_fingerprint IN SELECT c.fingerprint FROM vidsync.certificates c JOIN vidsync.devices d ON d.id = c.device_id
                        WHERE c.not_after > v_checked AND c.not_after <= v_now AND d.project_id = p_project_id AND d.revoked_at IS NOT NULL LOOP
    PERFORM vidsync.record_change(p_project_id, 'unblock', v_fingerprint);
  END LOOP;
END $$;

-- The project's active peers as a device sees them (itself left out), of some names or all.
-- Named ones are looked up by name (devices_live_name), not by scanning the project.
CREATE FUNCTION vidsync.project_peers(p_project_id bigint, p_self bigint, p_names text[] DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = '' AS $$
BEGIN
  IF p_names IS NULL THEN
    RETURN (SELECT coalesce(jsonb_agg(jsonb_build_object('name', d.name, 'ip', host(d.ip), 'syncthingId', d.syncthing_id) ORDER BY d.ip), '[]')
              FROM vidsync.devices d
             WHERE d.project_id = p_project_id AND d.status = 'active' AND NOT d.lighthouse AND d.id <> p_self);
  END IF;
  RETURN (SELECT coalesce(jsonb_agg(jsonb_build_object('name', d.name, 'ip', host(d.ip), 'syncthingId', d.syncthing_id) ORDER BY d.ip), '[]')
            FROM unnest(p_names) n (name)
            JOIN vidsync.devices d ON d.project_id = p_project_id AND d.name = n.name AND d.status <> 'released'
           WHERE d.status = 'active' AND NOT d.lighthouse AND d.id <> p_self);
END $$;

-- Applies a heartbeat (at most every heartbeat_seconds) and a Syncthing ID a device publishes;
-- answers the device row. Shared by device_refresh and device_sync.
CREATE FUNCTION vidsync.device_heartbeat(p_request vidsync.join_requests, p_syncthing_id text, p_project text) RETURNS vidsync.devices
LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_syncthing_id text := upper(p_syncthing_id);
  v_device vidsync.devices;
  v_other text;
BEGIN
  IF p_request.status <> 'approved' THEN
    RAISE EXCEPTION 'this device is %: %', p_request.status,
      CASE p_request.status WHEN 'pending' THEN 'wait for the operator''s approval' ELSE 'join again with a new invite code' END
      USING ERRCODE = 'VS409';
  END IF;
  IF v_syncthing_id IS NOT NULL AND v_syncthing_id !~ '^[A-Z2-7]{7}(-[A-Z2-7]{7}){7}$' THEN
    RAISE EXCEPTION 'invalid Syncthing device ID "%": expected eight groups of seven characters', left(p_syncthing_id, 80) USING ERRCODE = 'VS400';
  END IF;
  SELECT * INTO v_device FROM vidsync.devices d WHERE d.id = p_request.device_id;
  IF v_device.id IS NOT NULL AND (v_device.last_seen_at IS NULL
                                  OR v_device.last_seen_at < now() - make_interval(secs => vidsync.heartbeat_seconds())) THEN
    UPDATE vidsync.devices d SET last_seen_at = now() WHERE d.id = v_device.id RETURNING * INTO v_device;
  END IF;
  IF v_device.status = 'active' AND v_syncthing_id IS DISTINCT FROM v_device.syncthing_id AND v_syncthing_id IS NOT NULL THEN
    SELECT d.name INTO v_other FROM vidsync.devices d
     WHERE d.project_id = v_device.project_id AND d.syncthing_id = v_syncthing_id AND d.status = 'active' AND d.id <> v_device.id;
    IF FOUND THEN
      RAISE EXCEPTION 'Syncthing ID % is already used by device "%" of project "%": each device needs its own Syncthing',
        v_syncthing_id, v_other, p_project USING ERRCODE = 'VS409';
    END IF;
    BEGIN
      UPDATE vidsync.devices d SET syncthing_id = v_syncthing_id WHERE d.id = v_device.id;
    EXCEPTION WHEN unique_violation THEN
      RAISE EXCEPTION '%', vidsync.device_conflict('devices_live_syncthing_id', p_project, v_device.name) USING ERRCODE = 'VS409';
    END;
    PERFORM vidsync.audit('device.syncthing_id', v_device.project_id, v_device.id, v_device.ip,
      jsonb_build_object('device', v_device.name, 'old', v_device.syncthing_id, 'new', v_syncthing_id));
    v_device.syncthing_id := v_syncthing_id;
  END IF;
  RETURN v_device;
END $$;

-- device_refresh as in 006 (for devices of earlier releases), writing last_seen_at at most every
-- heartbeat_seconds.
CREATE OR REPLACE FUNCTION vidsync.device_refresh(p_token text, p_syncthing_id text DEFAULT NULL)
RETURNS TABLE (project text, device text, status text, ip inet, cidr cidr, lighthouses jsonb, blocklist text[], peers jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
  v_request vidsync.join_requests := vidsync.join_request_by_token(p_token);
  v_project text := (SELECT p.name FROM vidsync.projects p WHERE p.id = v_request.project_id);
  v_device vidsync.devices := vidsync.device_heartbeat(v_request, p_syncthing_id, v_project);
BEGIN
  IF v_device.status IS DISTINCT FROM 'active' THEN
    RETURN QUERY SELECT v_project, v_request.name, coalesce(v_device.status, 'released'), NULL::inet, NULL::cidr, '[]'::jsonb, '{}'::text[], '[]'::jsonb;
    RETURN;
  END IF;
  RETURN QUERY
  SELECT v_project, v_device.name, v_device.status, v_device.ip, n.cidr, n.lighthouses, n.blocklist,
         vidsync.project_peers(v_device.project_id, v_device.id)
    FROM vidsync.project_network(v_project) n;
END $$;

-- A device's refresh by version. p_known_version is the version of the state the device has
-- (NULL: none). Answers one row:
--   state 'unchanged', body NULL: nothing changed since p_known_version;
--   state 'delta': body {status, peers (added or changed), removed (peer names), blocklistAdded,
--     blocklistRemoved, lighthouses (the whole list, only when it changed)};
--   state 'full': body {project, device, status, ip, cidr, channel, lighthouses, blocklist, peers},
--     or {project, device, status} for a device that is no longer active.
-- Applying a delta to the state of p_known_version gives the state of `version`. The version is
-- read before the state, so a state newer than its version is sent again next time, never lost.
CREATE FUNCTION vidsync.device_sync(p_token text, p_known_version bigint DEFAULT NULL, p_syncthing_id text DEFAULT NULL)
RETURNS TABLE (state text, version bigint, body jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
  v_request vidsync.join_requests := vidsync.join_request_by_token(p_token);
  v_project text := (SELECT p.name FROM vidsync.projects p WHERE p.id = v_request.project_id);
  v_device vidsync.devices := vidsync.device_heartbeat(v_request, p_syncthing_id, v_project);
  v_versions vidsync.project_versions;
  v_names text[];
  v_lighthouses boolean;
  v_blocked text[];
  v_unblocked text[];
  v_peers jsonb;
BEGIN
  IF v_device.status IS DISTINCT FROM 'active' THEN
    RETURN QUERY SELECT 'full'::text, NULL::bigint,
      jsonb_build_object('project', v_project, 'device', v_request.name, 'status', coalesce(v_device.status, 'released'));
    RETURN;
  END IF;
  PERFORM vidsync.expire_blocklist(v_device.project_id);
  SELECT * INTO v_versions FROM vidsync.project_versions v WHERE v.project_id = v_device.project_id;
  IF p_known_version = v_versions.version THEN
    RETURN QUERY SELECT 'unchanged'::text, v_versions.version, NULL::jsonb;
    RETURN;
  END IF;
  IF p_known_version IS NULL OR p_known_version < v_versions.oldest_delta OR p_known_version > v_versions.version THEN
    RETURN QUERY
    SELECT 'full'::text, v_versions.version,
           jsonb_build_object('project', v_project, 'device', v_device.name, 'status', v_device.status, 'ip', host(v_device.ip),
                              'cidr', n.cidr::text, 'channel', vidsync.project_channel(v_device.project_id), 'lighthouses', n.lighthouses,
                              'blocklist', to_jsonb(n.blocklist), 'peers', vidsync.project_peers(v_device.project_id, v_device.id))
      FROM vidsync.project_network(v_project) n;
    RETURN;
  END IF;
  SELECT coalesce(array_agg(DISTINCT c.subject) FILTER (WHERE c.kind = 'peer'), '{}'),
         coalesce(bool_or(c.kind = 'lighthouse'), false),
         coalesce(array_agg(DISTINCT c.subject) FILTER (WHERE c.kind = 'block'), '{}'),
         coalesce(array_agg(DISTINCT c.subject) FILTER (WHERE c.kind = 'unblock'), '{}')
    INTO v_names, v_lighthouses, v_blocked, v_unblocked
    FROM vidsync.project_changes c
   WHERE c.project_id = v_device.project_id AND c.version > p_known_version;
  v_names := array_remove(v_names, v_device.name);
  v_peers := vidsync.project_peers(v_device.project_id, v_device.id, v_names);
  RETURN QUERY
  SELECT 'delta'::text, v_versions.version,
         jsonb_build_object(
           'status', v_device.status,
           'peers', v_peers,
           'removed', (SELECT to_jsonb(coalesce(array_agg(x.name ORDER BY x.name), '{}')) FROM unnest(v_names) x (name)
                        WHERE NOT v_peers @> jsonb_build_array(jsonb_build_object('name', x.name))),
           'blocklistAdded', to_jsonb(ARRAY(SELECT unnest(v_blocked) EXCEPT SELECT unnest(v_unblocked) ORDER BY 1)),
           'blocklistRemoved', to_jsonb(v_unblocked))
         || CASE WHEN v_lighthouses THEN (SELECT jsonb_build_object('lighthouses', n.lighthouses) FROM vidsync.project_network(v_project) n)
                 ELSE '{}'::jsonb END;
END $$;

-- reclaim_stale (003) reads last_seen_at, which is now at most heartbeat_seconds old for a device
-- that refreshes; its threshold is at least an hour, so a device that is up is never stale.

-- list_devices as in 002, with each device's last heartbeat: the liveness `device list` shows.
DROP FUNCTION vidsync.list_devices(text, text);
CREATE FUNCTION vidsync.list_devices(p_project text, p_device text DEFAULT NULL)
RETURNS TABLE (name text, ip inet, status text, lighthouse boolean, endpoint text, relay boolean, groups text[],
               syncthing_id text, operator_key boolean, public_key text, fingerprint text, not_after timestamptz,
               created_at timestamptz, revoked_at timestamptz, last_seen_at timestamptz)
LANGUAGE plpgsql STABLE SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
  v_id bigint := vidsync.project_id(p_project);
BEGIN
  IF p_device IS NOT NULL THEN
    PERFORM vidsync.live_device(v_id, p_project, p_device);
  END IF;
  RETURN QUERY
  SELECT d.name, d.ip, d.status, d.lighthouse, d.endpoint, d.relay, d.groups, d.syncthing_id, d.operator_key,
         d.public_key, c.fingerprint, c.not_after, d.created_at, d.revoked_at, d.last_seen_at
    FROM vidsync.devices d
    LEFT JOIN LATERAL (SELECT c.fingerprint, c.not_after FROM vidsync.certificates c
                        WHERE c.device_id = d.id ORDER BY c.issued_at DESC, c.id DESC LIMIT 1) c ON true
   WHERE d.project_id = v_id AND d.status <> 'released' AND (p_device IS NULL OR d.name = p_device)
   ORDER BY d.ip;
END $$;

---------------------------------------------------------------------------------------------
-- Grants and row-level security, as in 003 and 006 (new functions are executable by PUBLIC).
REVOKE ALL ON vidsync.project_versions, vidsync.project_changes FROM PUBLIC, anon, authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON vidsync.project_versions, vidsync.project_changes TO service_role;
REVOKE ALL ON SEQUENCE vidsync.project_changes_id_seq FROM PUBLIC, anon, authenticated;
GRANT USAGE, SELECT ON SEQUENCE vidsync.project_changes_id_seq TO service_role;
ALTER TABLE vidsync.project_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE vidsync.project_changes ENABLE ROW LEVEL SECURITY;
CREATE POLICY service_role_all ON vidsync.project_versions TO service_role USING (true) WITH CHECK (true);
CREATE POLICY service_role_all ON vidsync.project_changes TO service_role USING (true) WITH CHECK (true);

REVOKE ALL ON FUNCTION vidsync.change_retention(), vidsync.heartbeat_seconds(), vidsync.project_channel(bigint),
  vidsync.record_change(bigint, text, text), vidsync.project_created(), vidsync.device_changed(), vidsync.expire_blocklist(bigint),
  vidsync.project_peers(bigint, bigint, text[]), vidsync.device_heartbeat(vidsync.join_requests, text, text),
  vidsync.device_sync(text, bigint, text), vidsync.list_devices(text, text) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION vidsync.change_retention(), vidsync.heartbeat_seconds(), vidsync.project_channel(bigint),
  vidsync.record_change(bigint, text, text), vidsync.project_created(), vidsync.device_changed(), vidsync.expire_blocklist(bigint),
  vidsync.project_peers(bigint, bigint, text[]), vidsync.device_heartbeat(vidsync.join_requests, text, text),
  vidsync.device_sync(text, bigint, text), vidsync.list_devices(text, text) TO service_role;
GRANT EXECUTE ON FUNCTION vidsync.device_sync(text, bigint, text) TO anon;
