/*
 * ProcessPrng for Wine 8 (Debian 12), which lacks bcryptprimitives.dll.
 *
 * Rust's standard library (1.78 and later) takes its random bytes on
 * Windows from bcryptprimitives.dll's ProcessPrng, which Windows 10 and
 * later have and Wine added only in version 9. `.ci/wine-run` builds this
 * stand-in with MinGW-w64 into the Wine prefix the agent's Windows tests
 * run in; it hands out the system's random bytes (RtlGenRandom) as
 * ProcessPrng does. It is never shipped: Windows has the real one.
 */
#include <windows.h>
#include <ntsecapi.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!RtlGenRandom(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
