-- Revocation acknowledgements (issue 14): `device show` of a revoked device counts the project's
-- active devices that have applied its revocation.
--
--  - A revocation takes a project version (007's record_change); the device row keeps it as
--    revoked_version, so it outlives the change log (change_retention).
--  - A device reports the project version it has applied (its nebula reloaded with that version's
--    blocklist and the revoked devices removed from its Syncthing) with device_sync's
--    p_applied_version. It sends one only when it applied a newer one, which is rare: the polls in
--    between stay free of writes, and the write happens at once (not at the next heartbeat).
--  - acknowledged: active devices (the revoked one aside) whose applied version is at least the
--    revocation's; pending: the others, by name.

ALTER TABLE vidsync.devices
  ADD COLUMN revoked_version bigint,
  ADD COLUMN applied_version bigint,
  ADD COLUMN applied_at timestamptz;

-- Revocations from before this migration: the project's version now, at most that of the change.
UPDATE vidsync.devices d SET revoked_version = v.version
  FROM vidsync.project_versions v WHERE v.project_id = d.project_id AND d.revoked_at IS NOT NULL;

-- Takes the transaction's project version for a revocation (the AFTER trigger of 007 records its
-- changes under the same version) and keeps it on the row.
CREATE FUNCTION vidsync.device_revoking() RETURNS trigger LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  NEW.revoked_version := vidsync.record_change(NEW.project_id, CASE WHEN OLD.lighthouse THEN 'lighthouse' ELSE 'peer' END, OLD.name);
  RETURN NEW;
END $$;
CREATE TRIGGER devices_revoking BEFORE UPDATE OF revoked_at ON vidsync.devices FOR EACH ROW
  WHEN (NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL) EXECUTE FUNCTION vidsync.device_revoking();

-- device_sync of 010 becomes device_sync_state (the service role's); device_sync records the
-- applied version, if the device sent a newer one, and answers as before. Devices of earlier
-- releases call it with the first three arguments by name and get what they got.
ALTER FUNCTION vidsync.device_sync(text, bigint, text) RENAME TO device_sync_state;
-- Called from device_sync alone (which runs as the owner): no longer a definer of its own.
ALTER FUNCTION vidsync.device_sync_state(text, bigint, text) SECURITY INVOKER;

CREATE FUNCTION vidsync.device_sync(p_token text, p_known_version bigint DEFAULT NULL, p_syncthing_id text DEFAULT NULL,
                                    p_applied_version bigint DEFAULT NULL)
RETURNS TABLE (state text, version bigint, body jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
  v_request vidsync.join_requests;
BEGIN
  IF p_applied_version IS NOT NULL THEN
    v_request := vidsync.join_request_by_token(p_token);
    -- Never beyond the project's version, never backwards; no write when nothing is newer.
    UPDATE vidsync.devices d SET applied_version = least(p_applied_version, v.version), applied_at = now()
      FROM vidsync.project_versions v
     WHERE d.id = v_request.device_id AND v_request.status = 'approved' AND d.status = 'active' AND v.project_id = d.project_id
       AND d.applied_version IS DISTINCT FROM greatest(d.applied_version, least(p_applied_version, v.version));
  END IF;
  RETURN QUERY SELECT * FROM vidsync.device_sync_state(p_token, p_known_version, p_syncthing_id);
END $$;

-- Operator: a revoked device's revocation and who applied it; no row for a device never revoked.
CREATE FUNCTION vidsync.revocation_acks(p_project text, p_device text)
RETURNS TABLE (revoked_at timestamptz, revoked_version bigint, acknowledged integer, pending integer, pending_devices text[])
LANGUAGE plpgsql STABLE SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
  v_id bigint := vidsync.project_id(p_project);
  v_device vidsync.devices;
BEGIN
  SELECT * INTO v_device FROM vidsync.devices d
   WHERE d.project_id = v_id AND d.name = p_device AND d.status <> 'released' AND d.revoked_at IS NOT NULL;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  RETURN QUERY
  SELECT v_device.revoked_at, v_device.revoked_version,
         (count(*) FILTER (WHERE a.acked))::integer,
         (count(*) FILTER (WHERE NOT a.acked))::integer,
         coalesce(array_agg(a.name ORDER BY a.name) FILTER (WHERE NOT a.acked), '{}')
    FROM (SELECT d.name, coalesce(d.applied_version >= v_device.revoked_version, false) AS acked
            FROM vidsync.devices d
           WHERE d.project_id = v_id AND d.status = 'active' AND d.id <> v_device.id) a;
END $$;

-- Grants as in 008: device_sync for anon (SECURITY DEFINER, by token), the rest service_role only.
REVOKE ALL ON FUNCTION vidsync.device_sync_state(text, bigint, text) FROM PUBLIC, anon, authenticated;
REVOKE ALL ON FUNCTION vidsync.device_revoking(), vidsync.device_sync(text, bigint, text, bigint), vidsync.revocation_acks(text, text)
  FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION vidsync.device_revoking(), vidsync.device_sync(text, bigint, text, bigint), vidsync.device_sync_state(text, bigint, text),
  vidsync.revocation_acks(text, text) TO service_role;
GRANT EXECUTE ON FUNCTION vidsync.device_sync(text, bigint, text, bigint) TO anon;
