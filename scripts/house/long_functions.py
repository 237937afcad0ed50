import re,sys,os
# rough: report fns longer than N lines in library src files (excluding #[cfg(test)] modules)
N=int(sys.argv[1]) if len(sys.argv)>1 else 60
roots=sys.argv[2:] or ['.']
fnre=re.compile(r'^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)')
def strip(line):
    line=re.sub(r'"(\\.|[^"\\])*"','""',line)
    line=re.sub(r"'(\\.|[^'\\])'","''",line)
    i=line.find('//')
    return line if i<0 else line[:i]
for root in roots:
  for dp,dn,fns in os.walk(root):
    dn[:]=[d for d in dn if d not in('target','.tools','.git','tests','benches') ]
    for f in fns:
        if not f.endswith('.rs') or '/src' not in dp and not dp.endswith('src'): continue
        p=os.path.join(dp,f); lines=open(p).read().split('\n')
        i=0; intest=False
        while i<len(lines):
            l=lines[i]
            if re.match(r'\s*#\[cfg\(test\)\]',l): break
            m=fnre.match(l)
            if m:
                depth=0; started=False; j=i
                while j<len(lines):
                    s=strip(lines[j])
                    if not started and ';' in s and '{' not in s: break
                    for c in s:
                        if c=='{': depth+=1; started=True
                        elif c=='}': depth-=1
                    if started and depth==0: break
                    j+=1
                n=j-i+1
                if started and n>N: print(f"{n:4d} {p}:{i+1} {m.group(6)}")
            i+=1
