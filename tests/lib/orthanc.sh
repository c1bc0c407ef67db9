# orthanc.sh - a private Orthanc (Debian's orthanc + orthanc-dicomweb) for the
# integration tests and the benchmarks. Sourced; POSIX sh.
#
#   orthanc_start DIR NAME USER PASS   loopback HTTP and DICOM ports of its own,
#       storage in DIR/db, DICOMweb at /dicom-web/, basic auth with USER:PASS,
#       log in DIR/orthanc.log (--verbose: one line per request). Sets
#       ORTHANC_PID and ORTHANC_BASE (http://127.0.0.1:PORT) and waits until it
#       answers (60 s). Returns 1 with ORTHANC_WHY set when it cannot.
#   orthanc_upload SRC_DIR USER PASS   every *.dcm in SRC_DIR in one ZIP POST;
#       prints how many instances Orthanc then holds.
#   orthanc_stop

ORTHANC_PID=
ORTHANC_BASE=
ORTHANC_WHY=

orthanc_plugin() {
    for p in /usr/share/orthanc/plugins/libOrthancDicomWeb.so /usr/lib/orthanc/libOrthancDicomWeb.so*; do
        [ -f "$p" ] && { echo "$p"; return 0; }
    done
    return 1
}

orthanc_port() {
    "${PY:-python3}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

orthanc_start() {
    _dir=$1 _name=$2 _user=$3 _pass=$4
    _plugin=$(orthanc_plugin) || { ORTHANC_WHY="no Orthanc DICOMweb plugin (orthanc-dicomweb)"; return 1; }
    command -v Orthanc > /dev/null || { ORTHANC_WHY="no Orthanc binary (orthanc)"; return 1; }
    mkdir -p "$_dir/db"
    _hp=$(orthanc_port)
    _dp=$(orthanc_port)
    printf '{\n  "Name": "%s",\n  "HttpPort": %s, "DicomPort": %s,\n' "$_name" "$_hp" "$_dp" > "$_dir/orthanc.json"
    printf '  "StorageDirectory": "%s/db", "IndexDirectory": "%s/db",\n' "$_dir" "$_dir" >> "$_dir/orthanc.json"
    printf '  "RemoteAccessAllowed": false,\n  "AuthenticationEnabled": true,\n' >> "$_dir/orthanc.json"
    printf '  "RegisteredUsers": { "%s": "%s" },\n  "Plugins": [ "%s" ],\n' "$_user" "$_pass" "$_plugin" >> "$_dir/orthanc.json"
    printf '  "DicomWeb": { "Enable": true, "Root": "/dicom-web/" },\n  "HttpCompressionEnabled": false\n}\n' >> "$_dir/orthanc.json"
    Orthanc --verbose "$_dir/orthanc.json" > "$_dir/orthanc.log" 2>&1 &
    ORTHANC_PID=$!
    ORTHANC_BASE="http://127.0.0.1:$_hp"
    _i=0
    until curl -sf -o /dev/null -u "$_user:$_pass" "$ORTHANC_BASE/system"; do
        _i=$((_i + 1))
        if [ $_i -ge 600 ]; then
            ORTHANC_WHY="Orthanc did not answer on $ORTHANC_BASE"
            orthanc_stop
            return 1
        fi
        sleep 0.1
    done
    return 0
}

orthanc_upload() {
    _zip="$1/../orthanc-upload.zip"
    (cd "$1" && "${PY:-python3}" -c 'import zipfile,glob,sys; z=zipfile.ZipFile(sys.argv[1],"w"); [z.write(f) for f in sorted(glob.glob("*.dcm"))]' "$_zip") &&
    curl -sf -u "$2:$3" -X POST --data-binary @"$_zip" "$ORTHANC_BASE/instances" > /dev/null &&
    rm -f "$_zip" &&
    curl -sf -u "$2:$3" "$ORTHANC_BASE/statistics" |
        "${PY:-python3}" -c 'import json,sys; print(json.load(sys.stdin)["CountInstances"])'
}

orthanc_stop() {
    [ -n "$ORTHANC_PID" ] || return 0
    kill "$ORTHANC_PID" 2>/dev/null
    wait "$ORTHANC_PID" 2>/dev/null
    ORTHANC_PID=
}
