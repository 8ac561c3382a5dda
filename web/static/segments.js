/* SMS segment counting, the same rules as agent/templates.segments (tested against it):
   GSM 03.38 default alphabet, 160 units in one SMS, 153 per part; ^{}\[~]|€ and form
   feed take two units; anything else makes the whole text UCS-2 (UTF-16 code units,
   70 / 67). A part never splits an escape pair or a surrogate pair. */
(function (root) {
  "use strict";
  var BASIC = "\n\r !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ_" +
    "abcdefghijklmnopqrstuvwxyz\u00a1\u00a3\u00a4\u00a5\u00a7\u00bf\u00c4\u00c5\u00c6" +
    "\u00c7\u00c9\u00d1\u00d6\u00d8\u00dc\u00df\u00e0\u00e4\u00e5\u00e6\u00e8\u00e9" +
    "\u00ec\u00f1\u00f2\u00f6\u00f8\u00f9\u00fc\u0393\u0394\u0398\u039b\u039e\u03a0" +
    "\u03a3\u03a6\u03a8\u03a9";
  var EXTENDED = "\f[\\]^{|}~\u20ac";

  function segments(text) {
    var units = [], gsm = true, ch, i;
    var chars = Array.from(text);  // code points, like Python's str
    for (i = 0; i < chars.length; i++) {
      ch = chars[i];
      if (BASIC.indexOf(ch) >= 0) { units.push(1); }
      else if (EXTENDED.indexOf(ch) >= 0) { units.push(2); }
      else { gsm = false; break; }
    }
    if (!gsm) {
      units = chars.map(function (c) { return c.codePointAt(0) > 0xffff ? 2 : 1; });
    }
    var encoding = gsm ? "GSM-7" : "UCS-2";
    var single = gsm ? 160 : 70, multi = gsm ? 153 : 67;
    var total = units.reduce(function (a, b) { return a + b; }, 0);
    if (total <= single) {
      return {encoding: encoding, units: total, segments: total ? 1 : 0, per_segment: single};
    }
    var parts = 1, used = 0;
    units.forEach(function (width) {
      if (used + width > multi) { parts += 1; used = 0; }
      used += width;
    });
    return {encoding: encoding, units: total, segments: parts, per_segment: multi};
  }

  root.textbackSegments = segments;
  if (typeof module !== "undefined" && module.exports) { module.exports = segments; }
})(typeof window !== "undefined" ? window : globalThis);
