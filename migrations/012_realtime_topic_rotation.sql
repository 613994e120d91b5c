-- Realtime topic rotation and a cheaper delta at fleet scale (issue 16).
--
-- 1. A device that leaves (revoked, released, deleted while active) knew its project's Realtime
--    topic (010) and could go on hearing version numbers on it. The transaction that takes it out
--    of 'active' now draws a new topic, in this order:
--     - it records a 'topic' change first (record_change, 007), so the transaction's version bump
--       is broadcast on the OLD topic: every subscribed device wakes, the one leaving included;
--     - then the project's topic is replaced. A later version is broadcast on the new one only.
--    device_sync's delta names the new topic ('topic') when one was drawn since the device's
--    version, so the remaining devices move to it on the refresh that the old topic woke; the
--    device that left gets {status} alone, never the new topic.
-- 2. The herd after a change (every device fetches the same delta within seconds): the part of a
--    delta that is the same for every device (changed peers, removed names, blocklist, lighthouses,
--    topic) is computed by the first caller for (project, from version, to version) and kept in
--    vidsync.project_deltas; the others read it and take themselves out of it. Entries of older
--    versions are deleted by the first caller of a newer one. The blocklist expiry check
--    (expire_blocklist) runs its query inline, and calls the function only when a certificate
--    expired.

ALTER TABLE vidsync.project_changes DROP CONSTRAINT project_changes_kind_check;
ALTER TABLE vidsync.project_changes ADD CONSTRAINT project_changes_kind_check
  CHECK (kind IN ('peer', 'lighthouse', 'block', 'unblock', 'folder', 'ca', 'topic'));

-- A device left 'active': a new topic for the project, after the version of this transaction
-- (broadcast on the old topic) was taken. Subject: the device's name (who caused it).
CREATE FUNCTION vidsync.rotate_topic() RETURNS trigger LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  IF vidsync.record_change(OLD.project_id, 'topic', OLD.name) IS NOT NULL THEN
    UPDATE vidsync.project_versions v SET topic = vidsync.new_realtime_topic() WHERE v.project_id = OLD.project_id;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER devices_topic_rotation AFTER UPDATE OF status ON vidsync.devices FOR EACH ROW
  WHEN (OLD.status = 'active' AND NEW.status <> 'active') EXECUTE FUNCTION vidsync.rotate_topic();
CREATE TRIGGER devices_topic_rotation_delete AFTER DELETE ON vidsync.devices FOR EACH ROW
  WHEN (OLD.status = 'active') EXECUTE FUNCTION vidsync.rotate_topic();

-- The shared part of the delta from one version to the next ones: peers (every changed name that
-- is an active peer, whoever asks), removed (the other changed names), and `rest` (blocklistAdded,
-- blocklistRemoved, and lighthouses and topic when they changed). Valid while to_version is the
-- project's version.
CREATE TABLE vidsync.project_deltas (
  project_id bigint NOT NULL REFERENCES vidsync.projects (id) ON DELETE CASCADE,
  from_version bigint NOT NULL,
  to_version bigint NOT NULL,
  peers jsonb NOT NULL,
  removed text[] NOT NULL,
  rest jsonb NOT NULL,
  PRIMARY KEY (project_id, from_version)
);

-- The shared delta of a project from p_from to p_versions.version: kept, or computed and kept.
CREATE FUNCTION vidsync.project_delta(p_versions vidsync.project_versions, p_from bigint) RETURNS vidsync.project_deltas
LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_delta vidsync.project_deltas;
  v_names text[];
  v_lighthouses boolean;
  v_topic boolean;
  v_blocked text[];
  v_unblocked text[];
BEGIN
  SELECT * INTO v_delta FROM vidsync.project_deltas c
   WHERE c.project_id = p_versions.project_id AND c.from_version = p_from AND c.to_version = p_versions.version;
  IF FOUND THEN
    RETURN v_delta;
  END IF;
  SELECT coalesce(array_agg(DISTINCT c.subject) FILTER (WHERE c.kind = 'peer'), '{}'),
         coalesce(bool_or(c.kind = 'lighthouse'), false),
         coalesce(bool_or(c.kind = 'topic'), false),
         coalesce(array_agg(DISTINCT c.subject) FILTER (WHERE c.kind = 'block'), '{}'),
         coalesce(array_agg(DISTINCT c.subject) FILTER (WHERE c.kind = 'unblock'), '{}')
    INTO v_names, v_lighthouses, v_topic, v_blocked, v_unblocked
    FROM vidsync.project_changes c
   WHERE c.project_id = p_versions.project_id AND c.version > p_from;
  v_delta.project_id := p_versions.project_id;
  v_delta.from_version := p_from;
  v_delta.to_version := p_versions.version;
  -- No device left out: each caller takes itself out (device_sync).
  v_delta.peers := vidsync.project_peers(p_versions.project_id, NULL, v_names);
  v_delta.removed := ARRAY(SELECT x.name FROM unnest(v_names) x (name)
                            WHERE NOT v_delta.peers @> jsonb_build_array(jsonb_build_object('name', x.name)) ORDER BY x.name);
  v_delta.rest := jsonb_build_object(
                    'blocklistAdded', to_jsonb(ARRAY(SELECT unnest(v_blocked) EXCEPT SELECT unnest(v_unblocked) ORDER BY 1)),
                    'blocklistRemoved', to_jsonb(v_unblocked))
                  || CASE WHEN v_lighthouses THEN (SELECT jsonb_build_object('lighthouses', n.lighthouses)
                                                     FROM vidsync.projects p, vidsync.project_network(p.name) n WHERE p.id = p_versions.project_id)
                          ELSE '{}'::jsonb END
                  || CASE WHEN v_topic THEN jsonb_build_object('topic', p_versions.topic) ELSE '{}'::jsonb END;
  -- Of concurrent first callers one row stays; older versions' rows go.
  DELETE FROM vidsync.project_deltas c WHERE c.project_id = p_versions.project_id AND c.to_version < p_versions.version;
  INSERT INTO vidsync.project_deltas AS c VALUES (v_delta.*)
    ON CONFLICT (project_id, from_version) DO UPDATE SET to_version = excluded.to_version, peers = excluded.peers, removed = excluded.removed, rest = excluded.rest
    WHERE c.to_version < excluded.to_version;
  RETURN v_delta;
END $$;

-- project_peers as in 007, with a NULL p_self leaving no device out.
CREATE OR REPLACE FUNCTION vidsync.project_peers(p_project_id bigint, p_self bigint, p_names text[] DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = '' AS $$
BEGIN
  IF p_names IS NULL THEN
    RETURN (SELECT coalesce(jsonb_agg(jsonb_build_object('name', d.name, 'ip', host(d.ip), 'syncthingId', d.syncthing_id) ORDER BY d.ip), '[]')
              FROM vidsync.devices d
             WHERE d.project_id = p_project_id AND d.status = 'active' AND NOT d.lighthouse AND d.id IS DISTINCT FROM p_self);
  END IF;
  RETURN (SELECT coalesce(jsonb_agg(jsonb_build_object('name', d.name, 'ip', host(d.ip), 'syncthingId', d.syncthing_id) ORDER BY d.ip), '[]')
            FROM unnest(p_names) n (name)
            JOIN vidsync.devices d ON d.project_id = p_project_id AND d.name = n.name AND d.status <> 'released'
           WHERE d.status = 'active' AND NOT d.lighthouse AND d.id IS DISTINCT FROM p_self);
END $$;

-- device_sync as in 010, the delta from the shared one (project_delta) and naming a new topic.
CREATE OR REPLACE FUNCTION vidsync.device_sync(p_token text, p_known_version bigint DEFAULT NULL, p_syncthing_id text DEFAULT NULL)
RETURNS TABLE (state text, version bigint, body jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
  v_request vidsync.join_requests := vidsync.join_request_by_token(p_token);
  v_project text := (SELECT p.name FROM vidsync.projects p WHERE p.id = v_request.project_id);
  v_device vidsync.devices := vidsync.device_heartbeat(v_request, p_syncthing_id, v_project);
  v_versions vidsync.project_versions;
  v_delta vidsync.project_deltas;
BEGIN
  IF v_device.status IS DISTINCT FROM 'active' THEN
    RETURN QUERY SELECT 'full'::text, NULL::bigint,
      jsonb_build_object('project', v_project, 'device', v_request.name, 'status', coalesce(v_device.status, 'released'));
    RETURN;
  END IF;
  SELECT * INTO v_versions FROM vidsync.project_versions v WHERE v.project_id = v_device.project_id;
  -- expire_blocklist's test, inline: it records (and takes a version) only when a certificate expired.
  IF EXISTS (SELECT 1 FROM vidsync.certificates c JOIN vidsync.devices d ON d.id = c.device_id
              WHERE c.not_after > v_versions.blocklist_checked_at AND c.not_after <= now()
                AND d.project_id = v_device.project_id AND d.revoked_at IS NOT NULL) THEN
    PERFORM vidsync.expire_blocklist(v_device.project_id);
    SELECT * INTO v_versions FROM vidsync.project_versions v WHERE v.project_id = v_device.project_id;
  END IF;
  IF p_known_version = v_versions.version THEN
    RETURN QUERY SELECT 'unchanged'::text, v_versions.version, NULL::jsonb;
    RETURN;
  END IF;
  IF p_known_version IS NULL OR p_known_version < v_versions.oldest_delta OR p_known_version > v_versions.version THEN
    RETURN QUERY
    SELECT 'full'::text, v_versions.version,
           jsonb_build_object('project', v_project, 'device', v_device.name, 'status', v_device.status, 'ip', host(v_device.ip),
                              'cidr', n.cidr::text, 'channel', vidsync.project_channel(v_device.project_id), 'topic', v_versions.topic,
                              'lighthouses', n.lighthouses, 'blocklist', to_jsonb(n.blocklist),
                              'peers', vidsync.project_peers(v_device.project_id, v_device.id))
      FROM vidsync.project_network(v_project) n;
    RETURN;
  END IF;
  v_delta := vidsync.project_delta(v_versions, p_known_version);
  RETURN QUERY
  SELECT 'delta'::text, v_versions.version,
         jsonb_build_object(
           'status', v_device.status,
           'peers', jsonb_path_query_array(v_delta.peers, '$[*] ? (@.name != $self)', jsonb_build_object('self', v_device.name)),
           'removed', to_jsonb(array_remove(v_delta.removed, v_device.name)))
         || v_delta.rest;
END $$;

---------------------------------------------------------------------------------------------
-- Grants and row-level security as in 007: the new table and functions are the service role's.
REVOKE ALL ON vidsync.project_deltas FROM PUBLIC, anon, authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON vidsync.project_deltas TO service_role;
ALTER TABLE vidsync.project_deltas ENABLE ROW LEVEL SECURITY;
CREATE POLICY service_role_all ON vidsync.project_deltas TO service_role USING (true) WITH CHECK (true);
REVOKE ALL ON FUNCTION vidsync.rotate_topic(), vidsync.project_delta(vidsync.project_versions, bigint) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION vidsync.rotate_topic(), vidsync.project_delta(vidsync.project_versions, bigint) TO service_role;
