-- Undoing a registration on a control plane without transactions (the Supabase API), where
-- register_device, the signing on the operator's machine and record_certificate are separate
-- calls: when signing or writing the bundle fails, the operator takes the registration back.

-- Deletes the device that register_device created (its id), with its certificates, and frees its
-- address without quarantine: what a rolled-back transaction leaves. Only a live device of this
-- project with that very id, so it cannot erase a device registered by someone else since.
CREATE FUNCTION vidsync.discard_registration(p_project text, p_device text, p_device_id bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  v_id bigint := vidsync.project_id(p_project);
  v_device vidsync.devices := vidsync.live_device(v_id, p_project, p_device);
BEGIN
  -- Revoked since would mean its certificate is on blocklists: deleting it would take it off.
  IF v_device.id <> p_device_id OR v_device.status <> 'active' THEN
    RAISE EXCEPTION 'device "%" in project "%" is not the registration to undo', p_device, p_project USING ERRCODE = 'VS409';
  END IF;
  -- Certificates go with the device (ON DELETE CASCADE); its ip_pool row becomes free (SET NULL).
  DELETE FROM vidsync.devices d WHERE d.id = v_device.id;
  PERFORM vidsync.audit('device.discard', v_id, v_device.id, v_device.ip, jsonb_build_object('device', p_device));
END $$;

-- New functions are executable by PUBLIC; this one is the operator's (service_role's) alone.
REVOKE ALL ON FUNCTION vidsync.discard_registration(text, text, bigint) FROM PUBLIC, anon, authenticated;
