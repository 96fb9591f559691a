// The boot profile format moved to store/profile.ts (it is a store file format); this re-export
// stays while callers outside store/ and block/ move over. Import from store/profile.ts.
export {
  decodeProfile,
  encodeProfile,
  encodeProfileLine,
  PROFILE_HEADER,
  profileChunks,
  ProfileFormatError,
  readProfile,
} from "../store/profile.ts";
export type { ProfileEntry } from "../store/profile.ts";
