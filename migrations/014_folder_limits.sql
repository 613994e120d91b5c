-- Project folders' sizes and the project's default bandwidth limits (issue 13).
--
-- Syncthing tells a device nothing about a folder another device offers until it accepts it
-- (GET /rest/cluster/pending/folders has no size; /rest/db/status needs the folder configured),
-- so devices that share a folder report its size (Syncthing's globalBytes) and a device about to
-- accept it compares the latest report with its free space. Reports change no project version:
-- devices read them with their regular refresh (every 60 to 75 s).
--
-- The project's default limits (KiB/s, Syncthing's unit; NULL: none) apply on devices that set no
-- limit of their own. Devices read them with the same call; bundles carry both.

ALTER TABLE vidsync.projects
  ADD COLUMN sync_up_kibps integer CHECK (sync_up_kibps > 0 AND sync_up_kibps <= 200000000),
  ADD COLUMN sync_down_kibps integer CHECK (sync_down_kibps > 0 AND sync_down_kibps <= 200000000);

CREATE TABLE vidsync.folder_sizes (
  folder bigint PRIMARY KEY REFERENCES vidsync.folders (id) ON DELETE CASCADE,
  bytes bigint NOT NULL CHECK (bytes >= 0),
  -- The device whose report this is, by name.
  reported_by text NOT NULL,
  reported_at timestamptz NOT NULL DEFAULT now()
);

-- What devices of a project are told: its default limits and the latest size of each folder.
CREATE FUNCTION vidsync.folder_settings(p_project_id bigint)
RETURNS TABLE (sync_up_kibps integer, sync_down_kibps integer, sizes jsonb)
LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT p.sync_up_kibps, p.sync_down_kibps,
         coalesce((SELECT jsonb_object_agg(f.folder_id, s.bytes) FROM vidsync.folders f JOIN vidsync.folder_sizes s ON s.folder = f.id
                    WHERE f.project_id = p.id), '{}')
    FROM vidsync.projects p WHERE p.id = p_project_id;
$$;

---------------------------------------------------------------------------------------------
-- Operator functions.

CREATE FUNCTION vidsync.project_folder_settings(p_project text)
RETURNS TABLE (sync_up_kibps integer, sync_down_kibps integer, sizes jsonb)
LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT * FROM vidsync.folder_settings(vidsync.project_id(p_project));
$$;

-- Sets the project's default limits (both; NULL: no default in that direction).
CREATE FUNCTION vidsync.set_project_sync_limits(p_project text, p_up integer, p_down integer)
RETURNS TABLE (sync_up_kibps integer, sync_down_kibps integer, sizes jsonb)
LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_id bigint := vidsync.project_id(p_project);
BEGIN
  IF (p_up IS NOT NULL AND (p_up < 1 OR p_up > 200000000)) OR (p_down IS NOT NULL AND (p_down < 1 OR p_down > 200000000)) THEN
    RAISE EXCEPTION 'a bandwidth limit must be between 1 and 200000000 KiB/s' USING ERRCODE = 'VS400';
  END IF;
  UPDATE vidsync.projects p SET sync_up_kibps = p_up, sync_down_kibps = p_down WHERE p.id = v_id;
  -- A new project version wakes the devices (LISTEN, Realtime), whose refresh reads the limits:
  -- a 'folder' change of no one folder.
  PERFORM vidsync.record_change(v_id, 'folder', '');
  PERFORM vidsync.audit('project.sync_limits', v_id, NULL, NULL, jsonb_build_object('up_kibps', p_up, 'down_kibps', p_down));
  RETURN QUERY SELECT * FROM vidsync.folder_settings(v_id);
END $$;

---------------------------------------------------------------------------------------------
-- Device function, by device token: reports the sizes of the folders it shares ({folder ID:
-- bytes}; folders of other projects and bad entries are refused) and reads the project's settings.

CREATE FUNCTION vidsync.device_folder_report(p_token text, p_sizes jsonb)
RETURNS TABLE (sync_up_kibps integer, sync_down_kibps integer, sizes jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_device vidsync.devices := vidsync.active_device_by_token(p_token);
  v_entry record;
  v_folder bigint;
BEGIN
  IF p_sizes IS NOT NULL AND (pg_catalog.jsonb_typeof(p_sizes) <> 'object' OR (SELECT count(*) FROM pg_catalog.jsonb_object_keys(p_sizes)) > 256) THEN
    RAISE EXCEPTION 'folder sizes must be an object of at most 256 folder IDs' USING ERRCODE = 'VS400';
  END IF;
  FOR v_entry IN SELECT e.key, e.value FROM pg_catalog.jsonb_each(coalesce(p_sizes, '{}')) e LOOP
    IF pg_catalog.jsonb_typeof(v_entry.value) <> 'number' OR (v_entry.value #>> '{}') !~ '^[0-9]{1,18}$' THEN
      RAISE EXCEPTION 'invalid size of folder "%": expected a whole number of bytes', left(v_entry.key, 20) USING ERRCODE = 'VS400';
    END IF;
    SELECT f.id INTO v_folder FROM vidsync.folders f WHERE f.project_id = v_device.project_id AND f.folder_id = v_entry.key;
    IF NOT FOUND THEN
      -- A folder removed since the device last refreshed: nothing to record.
      CONTINUE;
    END IF;
    INSERT INTO vidsync.folder_sizes AS s (folder, bytes, reported_by) VALUES (v_folder, (v_entry.value #>> '{}')::bigint, v_device.name)
    ON CONFLICT (folder) DO UPDATE SET bytes = excluded.bytes, reported_by = excluded.reported_by, reported_at = now()
      WHERE s.bytes IS DISTINCT FROM excluded.bytes;
  END LOOP;
  RETURN QUERY SELECT * FROM vidsync.folder_settings(v_device.project_id);
END $$;

REVOKE ALL ON vidsync.folder_sizes FROM PUBLIC, anon, authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON vidsync.folder_sizes TO service_role;
ALTER TABLE vidsync.folder_sizes ENABLE ROW LEVEL SECURITY;
CREATE POLICY service_role_all ON vidsync.folder_sizes TO service_role USING (true) WITH CHECK (true);

REVOKE ALL ON FUNCTION vidsync.folder_settings(bigint), vidsync.project_folder_settings(text), vidsync.set_project_sync_limits(text, integer, integer),
  vidsync.device_folder_report(text, jsonb)
  FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION vidsync.folder_settings(bigint), vidsync.project_folder_settings(text), vidsync.set_project_sync_limits(text, integer, integer),
  vidsync.device_folder_report(text, jsonb)
  TO service_role;
GRANT EXECUTE ON FUNCTION vidsync.device_folder_report(text, jsonb) TO anon;
