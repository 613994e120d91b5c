-- Project folders (issue 13): a folder is an object of the project with a stable ID and a name,
-- independent of any device's local path. Devices derive Syncthing's folder ID from the project
-- and this ID, so two devices sharing differently named directories meet in one folder.
--
-- Access is set per group or per device (and a folder-wide default): send-receive, send-only,
-- receive-only or none. A device rule wins over group rules; group rules that disagree for a
-- device with no rule of its own are refused when set (a device whose groups change later gets
-- the most restrictive of them: none, receive-only, send-only, send-receive).
--
-- Device-facing functions (SECURITY DEFINER, by device token) are separate from device_refresh,
-- which this migration leaves alone: device_folders and device_create_folder.

CREATE TABLE vidsync.folders (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  project_id bigint NOT NULL REFERENCES vidsync.projects (id) ON DELETE CASCADE,
  -- The stable ID devices derive Syncthing's folder ID from: never reused, never renamed.
  folder_id text NOT NULL UNIQUE CHECK (folder_id ~ '^[0-9a-f]{12}$'),
  name text NOT NULL CHECK (name ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
  auto_accept boolean NOT NULL DEFAULT false,
  default_mode text NOT NULL DEFAULT 'send-receive' CHECK (default_mode IN ('send-receive', 'send-only', 'receive-only', 'none')),
  created_by text,
  created_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT folders_project_name UNIQUE (project_id, name)
);

CREATE TABLE vidsync.folder_access (
  folder bigint NOT NULL REFERENCES vidsync.folders (id) ON DELETE CASCADE,
  kind text NOT NULL CHECK (kind IN ('group', 'device')),
  subject text NOT NULL,
  mode text NOT NULL CHECK (mode IN ('send-receive', 'send-only', 'receive-only', 'none')),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (folder, kind, subject)
);

CREATE FUNCTION vidsync.check_folder_mode(p_mode text) RETURNS void LANGUAGE plpgsql IMMUTABLE SET search_path = '' AS $$
BEGIN
  IF p_mode IS NULL OR p_mode NOT IN ('send-receive', 'send-only', 'receive-only', 'none') THEN
    RAISE EXCEPTION 'invalid access mode "%": expected send-receive, send-only, receive-only or none', left(coalesce(p_mode, ''), 40)
      USING ERRCODE = 'VS400';
  END IF;
END $$;

CREATE FUNCTION vidsync.folder_row(p_project text, p_name text) RETURNS vidsync.folders LANGUAGE plpgsql STABLE SET search_path = '' AS $$
DECLARE
  v vidsync.folders;
BEGIN
  SELECT * INTO v FROM vidsync.folders f WHERE f.project_id = vidsync.project_id(p_project) AND f.name = p_name;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'project "%" has no folder "%": see `vidsync folder list %`', p_project, left(coalesce(p_name, ''), 80), p_project
      USING ERRCODE = 'VS404';
  END IF;
  RETURN v;
END $$;

-- A device's access to a folder: its own rule, else its groups' (the most restrictive when they
-- disagree), else the folder's default.
CREATE FUNCTION vidsync.folder_mode(p_folder bigint, p_device bigint) RETURNS text LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT coalesce(
    (SELECT a.mode FROM vidsync.folder_access a JOIN vidsync.devices d ON d.id = p_device
      WHERE a.folder = p_folder AND a.kind = 'device' AND a.subject = d.name),
    (SELECT a.mode FROM vidsync.folder_access a JOIN vidsync.devices d ON d.id = p_device
      WHERE a.folder = p_folder AND a.kind = 'group' AND a.subject = ANY (d.groups)
      ORDER BY array_position(ARRAY['none', 'receive-only', 'send-only', 'send-receive'], a.mode) LIMIT 1),
    (SELECT f.default_mode FROM vidsync.folders f WHERE f.id = p_folder));
$$;

-- The folders of a device's project with its access, and the other devices with theirs.
CREATE FUNCTION vidsync.folders_of_device(p_device bigint)
RETURNS TABLE (folder_id text, name text, auto_accept boolean, mode text, devices jsonb)
LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT f.folder_id, f.name, f.auto_accept, vidsync.folder_mode(f.id, me.id),
         coalesce((SELECT jsonb_agg(jsonb_build_object('name', d.name, 'mode', vidsync.folder_mode(f.id, d.id)) ORDER BY d.name)
                     FROM vidsync.devices d
                    WHERE d.project_id = me.project_id AND d.status = 'active' AND NOT d.lighthouse AND d.id <> me.id), '[]')
    FROM vidsync.devices me
    JOIN vidsync.folders f ON f.project_id = me.project_id
   WHERE me.id = p_device
   ORDER BY f.name;
$$;

CREATE FUNCTION vidsync.folder_summary(p_folder bigint)
RETURNS TABLE (project text, folder_id text, name text, auto_accept boolean, default_mode text, access jsonb, created_by text, created_at timestamptz)
LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT p.name, f.folder_id, f.name, f.auto_accept, f.default_mode,
         coalesce((SELECT jsonb_agg(jsonb_build_object('kind', a.kind, 'subject', a.subject, 'mode', a.mode) ORDER BY a.kind, a.subject)
                     FROM vidsync.folder_access a WHERE a.folder = f.id), '[]'),
         f.created_by, f.created_at
    FROM vidsync.folders f JOIN vidsync.projects p ON p.id = f.project_id
   WHERE f.id = p_folder;
$$;

CREATE FUNCTION vidsync.new_folder(p_project_id bigint, p_name text, p_auto_accept boolean, p_default_mode text, p_created_by text)
RETURNS bigint LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_id bigint;
BEGIN
  IF p_name IS NULL OR p_name !~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$' THEN
    RAISE EXCEPTION 'invalid folder name "%": use 1-63 lowercase letters, digits and hyphens, starting and ending with a letter or digit', left(coalesce(p_name, ''), 80)
      USING ERRCODE = 'VS400';
  END IF;
  PERFORM vidsync.check_folder_mode(p_default_mode);
  INSERT INTO vidsync.folders (project_id, folder_id, name, auto_accept, default_mode, created_by)
  VALUES (p_project_id, left(encode(sha256(convert_to(gen_random_uuid()::text || clock_timestamp()::text, 'UTF8')), 'hex'), 12),
          p_name, coalesce(p_auto_accept, false), p_default_mode, p_created_by)
  ON CONFLICT (project_id, name) DO NOTHING
  RETURNING id INTO v_id;
  RETURN v_id;
END $$;

---------------------------------------------------------------------------------------------
-- Operator functions.

CREATE FUNCTION vidsync.create_folder(p_project text, p_name text, p_auto_accept boolean DEFAULT false, p_default_mode text DEFAULT 'send-receive')
RETURNS TABLE (project text, folder_id text, name text, auto_accept boolean, default_mode text, access jsonb, created_by text, created_at timestamptz)
LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_project bigint := vidsync.project_id(p_project);
  v_id bigint := vidsync.new_folder(v_project, p_name, p_auto_accept, p_default_mode, NULL);
BEGIN
  IF v_id IS NULL THEN
    RAISE EXCEPTION 'project "%" already has a folder "%"', p_project, p_name USING ERRCODE = 'VS409';
  END IF;
  PERFORM vidsync.audit('folder.create', v_project, NULL, NULL, jsonb_build_object('folder', p_name));
  RETURN QUERY SELECT * FROM vidsync.folder_summary(v_id);
END $$;

CREATE FUNCTION vidsync.list_folders(p_project text)
RETURNS TABLE (project text, folder_id text, name text, auto_accept boolean, default_mode text, access jsonb, created_by text, created_at timestamptz)
LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT s.* FROM vidsync.folders f CROSS JOIN LATERAL vidsync.folder_summary(f.id) s
   WHERE f.project_id = vidsync.project_id(p_project) ORDER BY f.name;
$$;

CREATE FUNCTION vidsync.remove_folder(p_project text, p_name text)
RETURNS TABLE (project text, folder_id text, name text)
LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v vidsync.folders := vidsync.folder_row(p_project, p_name);
BEGIN
  DELETE FROM vidsync.folders f WHERE f.id = v.id;
  PERFORM vidsync.audit('folder.remove', v.project_id, NULL, NULL, jsonb_build_object('folder', v.name, 'folder_id', v.folder_id));
  RETURN QUERY SELECT p_project, v.folder_id, v.name;
END $$;

-- Sets (or with p_mode NULL removes) one rule: p_kind 'group', 'device' or 'default'.
CREATE FUNCTION vidsync.set_folder_access(p_project text, p_name text, p_kind text, p_subject text, p_mode text)
RETURNS TABLE (project text, folder_id text, name text, auto_accept boolean, default_mode text, access jsonb, created_by text, created_at timestamptz)
LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v vidsync.folders := vidsync.folder_row(p_project, p_name);
  v_conflict record;
BEGIN
  IF p_mode IS NOT NULL THEN PERFORM vidsync.check_folder_mode(p_mode); END IF;
  IF p_kind = 'default' THEN
    IF p_mode IS NULL THEN
      RAISE EXCEPTION 'the default access of a folder cannot be removed: set it with --mode' USING ERRCODE = 'VS400';
    END IF;
    UPDATE vidsync.folders f SET default_mode = p_mode WHERE f.id = v.id;
  ELSIF p_kind = 'group' THEN
    IF p_subject IS NULL OR p_subject !~ '^[a-z0-9][a-z0-9_-]{0,62}$' THEN
      RAISE EXCEPTION 'invalid group "%": use 1-63 lowercase letters, digits, hyphens and underscores', left(coalesce(p_subject, ''), 80) USING ERRCODE = 'VS400';
    END IF;
  ELSIF p_kind = 'device' THEN
    PERFORM vidsync.check_name('device', p_subject);
    IF NOT EXISTS (SELECT 1 FROM vidsync.devices d WHERE d.project_id = v.project_id AND d.name = p_subject AND d.status <> 'released') THEN
      RAISE EXCEPTION 'project "%" has no device "%": see `vidsync device list %`', p_project, p_subject, p_project USING ERRCODE = 'VS404';
    END IF;
  ELSE
    RAISE EXCEPTION 'invalid access rule kind "%": expected group, device or default', left(coalesce(p_kind, ''), 20) USING ERRCODE = 'VS400';
  END IF;
  IF p_kind <> 'default' THEN
    IF p_mode IS NULL THEN
      DELETE FROM vidsync.folder_access a WHERE a.folder = v.id AND a.kind = p_kind AND a.subject = p_subject;
    ELSE
      INSERT INTO vidsync.folder_access (folder, kind, subject, mode) VALUES (v.id, p_kind, p_subject, p_mode)
      ON CONFLICT (folder, kind, subject) DO UPDATE SET mode = excluded.mode, updated_at = now();
    END IF;
  END IF;
  -- A device in two groups whose rules disagree, with no rule of its own: refused, nothing changes.
  SELECT d.name, string_agg(format('%s (%s)', a.subject, a.mode), ', ' ORDER BY a.subject) AS rules INTO v_conflict
    FROM vidsync.devices d
    JOIN vidsync.folder_access a ON a.folder = v.id AND a.kind = 'group' AND a.subject = ANY (d.groups)
   WHERE d.project_id = v.project_id AND d.status = 'active'
     AND NOT EXISTS (SELECT 1 FROM vidsync.folder_access x WHERE x.folder = v.id AND x.kind = 'device' AND x.subject = d.name)
   GROUP BY d.name HAVING count(DISTINCT a.mode) > 1
   ORDER BY d.name LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'conflicting access to folder "%": device "%" is in groups %; give it its own rule with --device %', v.name, v_conflict.name, v_conflict.rules, v_conflict.name
      USING ERRCODE = 'VS409';
  END IF;
  PERFORM vidsync.audit('folder.access', v.project_id, NULL, NULL,
    jsonb_build_object('folder', v.name, 'kind', p_kind, 'subject', p_subject, 'mode', p_mode));
  RETURN QUERY SELECT * FROM vidsync.folder_summary(v.id);
END $$;

-- What goes into a device's bundle (embedded backend): its project's folders with its access.
CREATE FUNCTION vidsync.device_folders_for(p_project text, p_device text)
RETURNS TABLE (folder_id text, name text, auto_accept boolean, mode text, devices jsonb)
LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT f.* FROM vidsync.devices d CROSS JOIN LATERAL vidsync.folders_of_device(d.id) f
   WHERE d.project_id = vidsync.project_id(p_project) AND d.name = p_device AND d.status = 'active';
$$;

---------------------------------------------------------------------------------------------
-- Device functions, by device token (as device_refresh).


CREATE FUNCTION vidsync.device_folders(p_token text)
RETURNS TABLE (folder_id text, name text, auto_accept boolean, mode text, devices jsonb)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT * FROM vidsync.folders_of_device((vidsync.active_device_by_token(p_token)).id);
$$;

-- A device shares a folder the project does not have yet: it is created (access: the default,
-- send-receive) and returned; an existing folder of that name is returned as it is.
CREATE FUNCTION vidsync.device_create_folder(p_token text, p_name text)
RETURNS TABLE (folder_id text, name text, auto_accept boolean, mode text, devices jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
  v_device vidsync.devices := vidsync.active_device_by_token(p_token);
  v_id bigint;
BEGIN
  IF (SELECT count(*) FROM vidsync.folders f WHERE f.project_id = v_device.project_id) >= 256 THEN
    RAISE EXCEPTION 'the project has 256 folders, the most a device may create: ask the operator' USING ERRCODE = 'VS409';
  END IF;
  v_id := vidsync.new_folder(v_device.project_id, p_name, false, 'send-receive', v_device.name);
  IF v_id IS NOT NULL THEN
    PERFORM vidsync.audit('folder.create', v_device.project_id, v_device.id, v_device.ip, jsonb_build_object('folder', p_name, 'device', v_device.name));
  END IF;
  RETURN QUERY SELECT * FROM vidsync.folders_of_device(v_device.id) f WHERE f.name = p_name;
END $$;

---------------------------------------------------------------------------------------------
-- Indexes, grants and row-level security, as in 003 and 006.
CREATE INDEX folders_project ON vidsync.folders (project_id);

REVOKE ALL ON vidsync.folders, vidsync.folder_access FROM PUBLIC, anon, authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON vidsync.folders, vidsync.folder_access TO service_role;
ALTER TABLE vidsync.folders ENABLE ROW LEVEL SECURITY;
ALTER TABLE vidsync.folder_access ENABLE ROW LEVEL SECURITY;
CREATE POLICY service_role_all ON vidsync.folders TO service_role USING (true) WITH CHECK (true);
CREATE POLICY service_role_all ON vidsync.folder_access TO service_role USING (true) WITH CHECK (true);
REVOKE ALL ON SEQUENCE vidsync.folders_id_seq FROM PUBLIC, anon, authenticated;
GRANT USAGE, SELECT ON SEQUENCE vidsync.folders_id_seq TO service_role;

REVOKE ALL ON FUNCTION vidsync.check_folder_mode(text), vidsync.folder_row(text, text), vidsync.folder_mode(bigint, bigint),
  vidsync.folders_of_device(bigint), vidsync.folder_summary(bigint), vidsync.new_folder(bigint, text, boolean, text, text),
  vidsync.create_folder(text, text, boolean, text), vidsync.list_folders(text), vidsync.remove_folder(text, text),
  vidsync.set_folder_access(text, text, text, text, text), vidsync.device_folders_for(text, text),
  vidsync.device_folders(text), vidsync.device_create_folder(text, text)
  FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION vidsync.check_folder_mode(text), vidsync.folder_row(text, text), vidsync.folder_mode(bigint, bigint),
  vidsync.folders_of_device(bigint), vidsync.folder_summary(bigint), vidsync.new_folder(bigint, text, boolean, text, text),
  vidsync.create_folder(text, text, boolean, text), vidsync.list_folders(text), vidsync.remove_folder(text, text),
  vidsync.set_folder_access(text, text, text, text, text), vidsync.device_folders_for(text, text),
  vidsync.device_folders(text), vidsync.device_create_folder(text, text)
  TO service_role;
GRANT EXECUTE ON FUNCTION vidsync.device_folders(text), vidsync.device_create_folder(text, text) TO anon;

-- A folder created or removed, or its access changed, moves the project's version (007) like a
-- peer change, so listening devices refresh at once and read their folders again.
ALTER TABLE vidsync.project_changes DROP CONSTRAINT project_changes_kind_check;
ALTER TABLE vidsync.project_changes ADD CONSTRAINT project_changes_kind_check
  CHECK (kind IN ('peer', 'lighthouse', 'block', 'unblock', 'folder'));

CREATE FUNCTION vidsync.folder_changed() RETURNS trigger LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  -- The row as JSON: folders and folder_access rows have different columns.
  v_row jsonb := CASE TG_OP WHEN 'DELETE' THEN pg_catalog.to_jsonb(OLD) ELSE pg_catalog.to_jsonb(NEW) END;
  v_project bigint;
  v_name text;
BEGIN
  SELECT f.project_id, f.name INTO v_project, v_name FROM vidsync.folders f
   WHERE f.id = (CASE TG_TABLE_NAME WHEN 'folders' THEN v_row ->> 'id' ELSE v_row ->> 'folder' END)::bigint;
  IF NOT FOUND AND TG_TABLE_NAME = 'folders' THEN
    v_project := (v_row ->> 'project_id')::bigint;
    v_name := v_row ->> 'name';
  ELSIF NOT FOUND THEN
    -- Access rows deleted with their folder: the folder's own trigger records the change.
    RETURN NULL;
  END IF;
  PERFORM vidsync.record_change(v_project, 'folder', v_name);
  RETURN NULL;
END $$;
CREATE TRIGGER folders_version AFTER INSERT OR UPDATE OR DELETE ON vidsync.folders
  FOR EACH ROW EXECUTE FUNCTION vidsync.folder_changed();
CREATE TRIGGER folder_access_version AFTER INSERT OR UPDATE OR DELETE ON vidsync.folder_access
  FOR EACH ROW EXECUTE FUNCTION vidsync.folder_changed();
REVOKE ALL ON FUNCTION vidsync.folder_changed() FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION vidsync.folder_changed() TO service_role;
